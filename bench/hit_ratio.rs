//! Hit ratio of the RAM store's eviction policy (S3-FIFO, as used by `MemoryStore`) against
//! plain LRU on Zipf-distributed traces with variable object sizes, at several cache sizes; then
//! of RAM and disk tiers together (the disk a FIFO ring, as `store::disk` is), with the disk's
//! `second-request` admission against writing every object (`always`).
//!
//!     cargo run --release --example hit_ratio
//!
//! Deterministic: the traces come from a fixed-seed generator, so two runs print the same table.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use shoal::cache::CacheKey;
use shoal::store::disk::Doorkeeper;
use shoal::store::{touch, Resident, S3Fifo};

/// SplitMix64: small, fast, good enough for synthetic traces.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples ranks 0..n with probability proportional to 1/(rank+1)^alpha.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, alpha: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += 1.0 / ((rank + 1) as f64).powf(alpha);
                total
            })
            .collect::<Vec<_>>();
        let cumulative = cumulative.into_iter().map(|c| c / total).collect();
        Zipf { cumulative }
    }
    fn sample(&self, random: &mut Random) -> usize {
        let u = random.unit();
        self.cumulative
            .partition_point(|&c| c < u)
            .min(self.cumulative.len() - 1)
    }
}

/// Object size of a key: log-uniform between 1 KiB and 1 MiB, fixed per key.
fn size_of(key: u64) -> u64 {
    let mut random = Random(key.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let exponent = 10.0 + random.unit() * 10.0;
    2f64.powf(exponent) as u64
}

struct Item {
    key: u64,
    weight: u64,
    frequency: AtomicU8,
    gone: AtomicBool,
}

impl Resident for Item {
    fn weight(&self) -> u64 {
        self.weight
    }
    fn frequency(&self) -> &AtomicU8 {
        &self.frequency
    }
    fn id(&self) -> u64 {
        self.key
    }
    fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }
}

trait Cache {
    /// Looks `key` up, inserting it on a miss; returns whether it was a hit.
    fn access(&mut self, key: u64, size: u64) -> bool;
}

struct S3FifoCache {
    policy: S3Fifo<Item>,
    index: HashMap<u64, Arc<Item>>,
}

impl Cache for S3FifoCache {
    fn access(&mut self, key: u64, size: u64) -> bool {
        if let Some(item) = self.index.get(&key) {
            touch(&item.frequency);
            return true;
        }
        let item = Arc::new(Item {
            key,
            weight: size,
            frequency: AtomicU8::new(0),
            gone: AtomicBool::new(false),
        });
        self.index.insert(key, Arc::clone(&item));
        for evicted in self.policy.admit(item) {
            self.index.remove(&evicted.key);
        }
        false
    }
}

struct LruCache {
    capacity: u64,
    used: u64,
    tick: u64,
    index: HashMap<u64, (u64, u64)>,
    order: BTreeMap<u64, u64>,
}

impl Cache for LruCache {
    fn access(&mut self, key: u64, size: u64) -> bool {
        self.tick += 1;
        if let Some((_, tick)) = self.index.get_mut(&key) {
            self.order.remove(tick);
            *tick = self.tick;
            self.order.insert(self.tick, key);
            return true;
        }
        if size > self.capacity {
            return false;
        }
        while self.used + size > self.capacity {
            let Some((_, victim)) = self.order.pop_first() else {
                break;
            };
            if let Some((victim_size, _)) = self.index.remove(&victim) {
                self.used -= victim_size;
            }
        }
        self.index.insert(key, (size, self.tick));
        self.order.insert(self.tick, key);
        self.used += size;
        false
    }
}

/// The disk tier as the node runs it: a FIFO ring of bytes behind the RAM tier, written on
/// admission, promoting to RAM on a second disk hit.
struct TwoTiers {
    ram: S3FifoCache,
    disk: std::collections::VecDeque<(u64, u64)>,
    on_disk: HashMap<u64, u8>,
    disk_used: u64,
    disk_capacity: u64,
    doorkeeper: Option<Doorkeeper>,
    bytes_written: u64,
    disk_hits: u64,
}

impl TwoTiers {
    fn new(ram: u64, disk: u64, second_request: bool) -> TwoTiers {
        TwoTiers {
            ram: S3FifoCache {
                policy: S3Fifo::new(ram),
                index: HashMap::new(),
            },
            disk: Default::default(),
            on_disk: HashMap::new(),
            disk_used: 0,
            disk_capacity: disk,
            doorkeeper: second_request.then(|| Doorkeeper::new((disk / (32 << 10)) as usize)),
            bytes_written: 0,
            disk_hits: 0,
        }
    }

    fn write(&mut self, key: u64, size: u64) {
        if self.on_disk.contains_key(&key) {
            return;
        }
        while self.disk_used + size > self.disk_capacity {
            let Some((victim, victim_size)) = self.disk.pop_front() else {
                return;
            };
            self.on_disk.remove(&victim);
            self.disk_used -= victim_size;
        }
        self.disk.push_back((key, size));
        self.on_disk.insert(key, 0);
        self.disk_used += size;
        self.bytes_written += size;
    }
}

impl Cache for TwoTiers {
    fn access(&mut self, key: u64, size: u64) -> bool {
        if let Some(item) = self.ram.index.get(&key) {
            touch(&item.frequency);
            // A RAM hit is a second request.
            self.write(key, size);
            return true;
        }
        if let Some(hits) = self.on_disk.get_mut(&key) {
            *hits += 1;
            if *hits >= 2 {
                self.ram.access(key, size);
            }
            self.disk_hits += 1;
            return true;
        }
        self.ram.access(key, size);
        let admitted = match &mut self.doorkeeper {
            None => true,
            Some(doorkeeper) => doorkeeper.seen_before(CacheKey(
                u128::from(key) * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835,
            )),
        };
        if admitted {
            self.write(key, size);
        }
        false
    }
}

struct Outcome {
    object_ratio: f64,
    byte_ratio: f64,
}

fn replay(cache: &mut dyn Cache, trace: &[u64]) -> Outcome {
    let (mut hits, mut hit_bytes, mut bytes) = (0u64, 0u64, 0u64);
    // The first 20% warm the cache; only the rest is measured.
    let warmup = trace.len() / 5;
    for (index, &key) in trace.iter().enumerate() {
        let size = size_of(key);
        let hit = cache.access(key, size);
        if index >= warmup {
            bytes += size;
            if hit {
                hits += 1;
                hit_bytes += size;
            }
        }
    }
    let measured = (trace.len() - warmup) as f64;
    Outcome {
        object_ratio: hits as f64 / measured,
        byte_ratio: hit_bytes as f64 / bytes as f64,
    }
}

/// `requests` keys: Zipf(`alpha`) over `objects` keys, and a `scan_share` of keys never seen
/// before or again (one-hit objects).
fn trace(objects: usize, requests: usize, alpha: f64, scan_share: f64, seed: u64) -> Vec<u64> {
    let zipf = Zipf::new(objects, alpha);
    let mut random = Random(seed);
    let mut next_scan = objects as u64;
    (0..requests)
        .map(|_| {
            if random.unit() < scan_share {
                next_scan += 1;
                next_scan
            } else {
                zipf.sample(&mut random) as u64
            }
        })
        .collect()
}

fn main() {
    let objects = 100_000;
    let requests = 2_000_000;
    let mean_size: f64 = (0..objects as u64).map(size_of).sum::<u64>() as f64 / objects as f64;
    let catalogue_bytes = mean_size * objects as f64;
    println!("Zipf traces: {objects} objects (1 KiB-1 MiB, log-uniform, {:.0} MiB in all), {requests} requests", catalogue_bytes / (1 << 20) as f64);
    println!(
        "{:<34} {:>8} {:>11} {:>11} {:>11} {:>11}",
        "trace", "cache", "S3-FIFO obj", "LRU obj", "S3-FIFO B", "LRU B"
    );
    for (name, alpha, scan_share) in [
        ("zipf 0.8", 0.8, 0.0),
        ("zipf 1.0", 1.0, 0.0),
        ("zipf 0.8 + 30% one-hit scans", 0.8, 0.3),
    ] {
        let trace = trace(objects, requests, alpha, scan_share, 42);
        for percent in [1.0, 5.0, 10.0] {
            let capacity = (catalogue_bytes * percent / 100.0) as u64;
            let s3 = replay(
                &mut S3FifoCache {
                    policy: S3Fifo::new(capacity),
                    index: HashMap::new(),
                },
                &trace,
            );
            let lru = replay(
                &mut LruCache {
                    capacity,
                    used: 0,
                    tick: 0,
                    index: HashMap::new(),
                    order: BTreeMap::new(),
                },
                &trace,
            );
            println!(
                "{:<34} {:>7}% {:>10.1}% {:>10.1}% {:>10.1}% {:>10.1}%",
                name,
                percent,
                s3.object_ratio * 100.0,
                lru.object_ratio * 100.0,
                s3.byte_ratio * 100.0,
                lru.byte_ratio * 100.0
            );
        }
    }

    two_tier_table(objects, requests, catalogue_bytes);
}

fn two_tier_table(objects: usize, requests: usize, catalogue_bytes: f64) {
    println!();
    println!("RAM (S3-FIFO, 2% of the catalogue) + disk (FIFO ring): disk admission");
    println!(
        "{:<34} {:>6} {:>13} {:>13} {:>13} {:>13}",
        "trace", "disk", "always obj", "2nd-req obj", "always wr/req", "2nd-req wr/req"
    );
    for (name, alpha, scan_share) in [
        ("zipf 0.8", 0.8, 0.0),
        ("zipf 0.8 + 30% one-hit scans", 0.8, 0.3),
        ("zipf 0.8 + 60% one-hit scans", 0.8, 0.6),
    ] {
        let trace = trace(objects, requests, alpha, scan_share, 7);
        let ram = (catalogue_bytes * 0.02) as u64;
        for percent in [10.0, 25.0] {
            let disk = (catalogue_bytes * percent / 100.0) as u64;
            let mut always = TwoTiers::new(ram, disk, false);
            let always_ratio = replay(&mut always, &trace);
            let mut second = TwoTiers::new(ram, disk, true);
            let second_ratio = replay(&mut second, &trace);
            let per_request =
                |tiers: &TwoTiers| tiers.bytes_written as f64 / requests as f64 / 1024.0;
            println!(
                "{:<34} {:>5}% {:>12.1}% {:>12.1}% {:>10.0} KiB {:>10.0} KiB",
                name,
                percent,
                always_ratio.object_ratio * 100.0,
                second_ratio.object_ratio * 100.0,
                per_request(&always),
                per_request(&second),
            );
        }
    }
}
