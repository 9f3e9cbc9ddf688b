//! The disk tier: admission, restart, purge, checksums, failing disks. The crash test (kill -9
//! of the real binary under load) is in `crash.rs`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal::config::{Admission, ByteSize, Config, DiskDir};
use shoal::store::disk::VolumeState;

use crate::support::*;

/// A directory under the system's temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "shoal-test-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("SHOAL_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Small segments so that tests fill and reuse them quickly.
fn with_disk(config: &mut Config, dir: &Path) {
    config.disk.dirs = vec![DiskDir {
        path: dir.to_owned(),
        size: ByteSize(16 << 20),
    }];
    config.disk.segment_size = Some(ByteSize(4 << 20));
    config.disk.max_object_size = ByteSize(1 << 20);
}

fn disk_stats(node: &shoal::Node) -> shoal::store::disk::DiskStats {
    node.proxy.disk().expect("disk tier configured").stats()
}

async fn disk_ready(node: &shoal::Node) {
    let disk = Arc::clone(node.proxy.disk().unwrap());
    assert!(
        eventually(|| disk.is_ready()).await,
        "the disk tier never got ready"
    );
}

/// Stops writing and releases the directory, as a clean shutdown does.
fn shut_down(node: &shoal::Node) {
    node.proxy.shutdown_storage();
}

fn body_for(target: &str) -> Vec<u8> {
    // Distinct bytes at every position of every object, so that a misplaced or damaged record
    // shows.
    (0..2_500u64)
        .flat_map(|word| {
            let mut input = target.as_bytes().to_vec();
            input.extend_from_slice(&word.to_le_bytes());
            xxhash_rust::xxh3::xxh3_64(&input).to_le_bytes()
        })
        .collect()
}

/// GET with a fixed `Host`: keys include the host, and a restarted node listens on another
/// ephemeral port.
async fn fetch(node: &shoal::Node, path: &str) -> (u16, http::HeaderMap, bytes::Bytes) {
    get_with(node, path, &[("host", "disk.test")]).await
}

async fn origin() -> Origin {
    Origin::start(|seen| {
        Reply::ok(body_for(&seen.target))
            .header("cache-control", "max-age=600")
            .header("etag", "\"e1\"")
    })
    .await
}

#[tokio::test]
async fn an_object_is_written_to_disk_on_its_second_request() {
    let origin = origin().await;
    let dir = TempDir::new("admission");
    let node = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&node).await;
    fetch(&node, "/once").await;
    fetch(&node, "/twice").await;
    let (_, headers, _) = fetch(&node, "/twice").await;
    assert_eq!(cache_status(&headers), "HIT");
    assert!(eventually(|| disk_stats(&node).objects_written == 1).await);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let stats = disk_stats(&node);
    assert_eq!(
        stats.objects_written, 1,
        "only the object requested twice: {stats:?}"
    );
    assert_eq!(stats.entries, 1);
}

#[tokio::test]
async fn with_always_admission_every_stored_object_is_written() {
    let origin = origin().await;
    let dir = TempDir::new("always");
    let node = node_with(&origin, |config| {
        with_disk(config, &dir.0);
        config.disk.admission = Admission::Always;
    })
    .await;
    disk_ready(&node).await;
    for path in ["/a", "/b", "/c"] {
        fetch(&node, path).await;
    }
    assert!(eventually(|| disk_stats(&node).objects_written == 3).await);
}

#[tokio::test]
async fn a_restarted_node_serves_from_disk_and_purges_stay_purged() {
    let origin = origin().await;
    let dir = TempDir::new("restart");
    let first = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&first).await;
    for path in ["/kept", "/purged", "/kept", "/purged"] {
        fetch(&first, path).await;
    }
    assert!(eventually(|| disk_stats(&first).objects_written == 2).await);
    shut_down(&first);

    let second = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&second).await;
    assert_eq!(disk_stats(&second).entries, 2, "the index was rebuilt");
    let before = origin.seen().len();
    let (status, headers, body) = fetch(&second, "/kept").await;
    assert_eq!((status, cache_status(&headers)), (200, "HIT"));
    assert_eq!(body, body_for("/kept"));
    assert!(headers.contains_key("age"));
    assert_eq!(
        origin.seen().len(),
        before,
        "served from disk, not the origin"
    );
    let purge = client()
        .post(format!(
            "http://{}/purge?url=http://disk.test/purged",
            second.admin.unwrap()
        ))
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    shut_down(&second);

    let third = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&third).await;
    let (_, headers, _) = fetch(&third, "/kept").await;
    assert_eq!(cache_status(&headers), "HIT");
    let (_, headers, body) = fetch(&third, "/purged").await;
    assert_eq!(cache_status(&headers), "MISS", "a purge survives a restart");
    assert_eq!(body, body_for("/purged"));
}

#[tokio::test]
async fn hot_disk_objects_are_promoted_to_ram() {
    let origin = origin().await;
    let dir = TempDir::new("promote");
    let first = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&first).await;
    fetch(&first, "/hot").await;
    fetch(&first, "/hot").await;
    assert!(eventually(|| disk_stats(&first).objects_written == 1).await);
    shut_down(&first);

    let second = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&second).await;
    for _ in 0..4 {
        let (_, headers, _) = fetch(&second, "/hot").await;
        assert_eq!(cache_status(&headers), "HIT");
    }
    // Read from disk twice (promote_after_hits = 2), then from RAM.
    assert_eq!(disk_stats(&second).hits, 2);
    assert_eq!(second.proxy.store().stats().entries, 1);
}

/// Where `body_for(target)` sits in the directory's first segment.
fn offset_of(dir: &Path, target: &str) -> usize {
    let data = std::fs::read(dir.join("segment-00000.dat")).unwrap();
    let body = body_for(target);
    data.windows(64)
        .position(|window| window == &body[..64])
        .expect("the body is in the segment")
}

#[tokio::test]
async fn a_record_that_fails_its_checksum_is_dropped_and_fetched_again() {
    use std::os::unix::fs::FileExt;
    let origin = origin().await;
    let dir = TempDir::new("corrupt");
    let node = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&node).await;
    fetch(&node, "/flipped").await;
    fetch(&node, "/flipped").await;
    assert!(eventually(|| disk_stats(&node).objects_written == 1).await);
    shut_down(&node);

    let node = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&node).await;
    assert_eq!(disk_stats(&node).entries, 1);
    // Bit rot under a running node: one byte in the middle of the stored body.
    let at = offset_of(&dir.0, "/flipped") + 10_000;
    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.0.join("segment-00000.dat"))
        .unwrap();
    let mut byte = [0u8];
    segment.read_exact_at(&mut byte, at as u64).unwrap();
    segment.write_all_at(&[byte[0] ^ 0x01], at as u64).unwrap();

    let before = origin.count("/flipped");
    let (status, headers, received) = fetch(&node, "/flipped").await;
    assert_eq!(status, 200);
    assert!(
        received == body_for("/flipped"),
        "the client gets the origin's bytes"
    );
    assert_eq!(cache_status(&headers), "MISS");
    assert_eq!(origin.count("/flipped"), before + 1);
    assert_eq!(disk_stats(&node).corrupt, 1);
}

/// Damage in the middle of the segment being written loses only the damaged records: the
/// rebuild goes on at the next record that verifies, and writing resumes after the last one.
#[tokio::test]
async fn a_damaged_record_in_the_active_segment_loses_only_itself() {
    use std::os::unix::fs::FileExt;
    let origin = origin().await;
    let dir = TempDir::new("resync");
    let paths = ["/one", "/two", "/three", "/four", "/five"];
    let node = node_with(&origin, |config| {
        with_disk(config, &dir.0);
        config.disk.admission = Admission::Always;
    })
    .await;
    disk_ready(&node).await;
    for (written, path) in (1..).zip(paths) {
        fetch(&node, path).await;
        assert!(eventually(|| disk_stats(&node).objects_written == written).await);
    }
    shut_down(&node);
    let segment = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.0.join("segment-00000.dat"))
        .unwrap();
    let flip = |at: usize| {
        let mut byte = [0u8];
        segment.read_exact_at(&mut byte, at as u64).unwrap();
        segment.write_all_at(&[byte[0] ^ 0x01], at as u64).unwrap();
    };
    // A flipped byte in one body (its header still says where it ends)...
    flip(offset_of(&dir.0, "/two") + 7_000);
    // ...and one in another record's header, which hides where that record ends.
    let data = std::fs::read(dir.0.join("segment-00000.dat")).unwrap();
    let four = offset_of(&dir.0, "/four");
    let header = data[..four]
        .windows(4)
        .rposition(|window| window == b"SHRC")
        .expect("the record header before the body");
    flip(header + 45);

    let restart = || {
        node_with(&origin, |config| {
            with_disk(config, &dir.0);
            config.disk.admission = Admission::Always;
        })
    };
    let node = restart().await;
    disk_ready(&node).await;
    assert_eq!(disk_stats(&node).entries, 3, "all but the two damaged");
    assert_eq!(disk_stats(&node).corrupt, 2);
    for path in ["/one", "/three", "/five"] {
        let (_, headers, body) = fetch(&node, path).await;
        assert_eq!(cache_status(&headers), "HIT", "{path} survived");
        assert!(body == body_for(path), "{path}");
    }
    for path in ["/two", "/four"] {
        let (_, headers, body) = fetch(&node, path).await;
        assert_eq!(cache_status(&headers), "MISS", "{path} was damaged");
        assert!(body == body_for(path));
    }
    assert!(eventually(|| disk_stats(&node).entries == 5).await);
    shut_down(&node);

    // The new copies went after the last good record, not over it.
    let node = restart().await;
    disk_ready(&node).await;
    assert_eq!(disk_stats(&node).entries, 5);
    for path in paths {
        let (_, headers, body) = fetch(&node, path).await;
        assert_eq!(cache_status(&headers), "HIT", "{path}");
        assert!(body == body_for(path), "{path}");
    }
}

#[tokio::test]
async fn a_torn_write_is_cut_off_at_restart_and_writing_goes_on_after_it() {
    let origin = origin().await;
    let dir = TempDir::new("torn");
    let node = node_with(&origin, |config| {
        with_disk(config, &dir.0);
        config.disk.admission = Admission::Always;
    })
    .await;
    disk_ready(&node).await;
    // One at a time, so that they lie in the segment in this order.
    for (written, path) in (1..).zip(["/one", "/two", "/three"]) {
        fetch(&node, path).await;
        assert!(eventually(|| disk_stats(&node).objects_written == written).await);
    }
    shut_down(&node);
    // The last record loses its tail, as when the process dies in the middle of a write.
    let segment = dir.0.join("segment-00000.dat");
    let cut = offset_of(&dir.0, "/three") + 5_000;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();

    let node = node_with(&origin, |config| {
        with_disk(config, &dir.0);
        config.disk.admission = Admission::Always;
    })
    .await;
    disk_ready(&node).await;
    assert_eq!(
        disk_stats(&node).entries,
        2,
        "the torn record is not indexed"
    );
    let (_, headers, body) = fetch(&node, "/three").await;
    assert_eq!(cache_status(&headers), "MISS");
    assert!(body == body_for("/three"));
    assert!(eventually(|| disk_stats(&node).entries == 3).await);
    shut_down(&node);

    let node = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&node).await;
    assert_eq!(
        disk_stats(&node).entries,
        3,
        "the record written over the torn one is good"
    );
    for path in ["/one", "/two", "/three"] {
        let (_, headers, body) = fetch(&node, path).await;
        assert_eq!(cache_status(&headers), "HIT", "{path}");
        assert!(body == body_for(path));
    }
}

#[tokio::test]
async fn a_full_disk_is_dropped_and_the_node_keeps_serving() {
    let origin = origin().await;
    let dir = TempDir::new("full");
    // The second segment is /dev/full: every write to it fails with ENOSPC, as on a full disk.
    std::os::unix::fs::symlink("/dev/full", dir.0.join("segment-00001.dat")).unwrap();
    let node = node_with(&origin, |config| {
        with_disk(config, &dir.0);
        config.disk.admission = Admission::Always;
    })
    .await;
    disk_ready(&node).await;
    // 20 KB objects: about 200 fill the first 4 MiB segment.
    for n in 0..260 {
        let path = format!("/fill/{n}");
        let (status, _, body) = fetch(&node, &path).await;
        assert_eq!(status, 200);
        assert_eq!(body, body_for(&path));
    }
    assert!(eventually(|| disk_stats(&node).dirs[0].state == VolumeState::Failed).await);
    let stats = disk_stats(&node);
    let failure = stats.dirs[0].failure.clone().unwrap();
    assert!(failure.contains("disk full"), "{failure}");
    assert_eq!(
        stats.entries, 0,
        "objects of a failed directory are not served"
    );
    // RAM and the origin carry on.
    let (_, headers, body) = fetch(&node, "/fill/259").await;
    assert_eq!(cache_status(&headers), "HIT");
    assert_eq!(body, body_for("/fill/259"));
    let (status, _, _) = fetch(&node, "/after").await;
    assert_eq!(status, 200);

    // Room is made (the full segment goes): the directory is tried again, with back-off,
    // and written to once more, without a restart.
    let written = disk_stats(&node).objects_written;
    std::fs::remove_file(dir.0.join("segment-00001.dat")).unwrap();
    let mut n = 0;
    while disk_stats(&node).objects_written <= written && n < 150 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        fetch(&node, &format!("/again/{n}")).await;
        n += 1;
    }
    let stats = disk_stats(&node);
    assert_eq!(stats.dirs[0].state, VolumeState::Ready, "{stats:?}");
    assert!(stats.objects_written > written, "{stats:?}");
}

#[tokio::test]
async fn an_unusable_directory_is_skipped_at_start() {
    let origin = origin().await;
    let dir = TempDir::new("unusable");
    let file = dir.0.join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let node = node_with(&origin, |config| with_disk(config, &file.join("cache"))).await;
    let stats = disk_stats(&node);
    assert_eq!(stats.dirs[0].state, VolumeState::Failed);
    assert!(stats.dirs[0].failure.is_some());
    fetch(&node, "/x").await;
    let (status, headers, _) = fetch(&node, "/x").await;
    assert_eq!((status, cache_status(&headers)), (200, "HIT"));
}

#[tokio::test]
async fn a_directory_in_use_is_not_shared() {
    let origin = origin().await;
    let dir = TempDir::new("shared");
    let first = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&first).await;
    let second = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    let stats = disk_stats(&second);
    assert_eq!(stats.dirs[0].state, VolumeState::Failed);
    assert!(stats.dirs[0].failure.clone().unwrap().contains("in use"));
    assert_eq!(disk_stats(&first).dirs[0].state, VolumeState::Ready);
}

#[tokio::test]
async fn a_sliced_object_comes_back_from_disk_after_a_restart() {
    // Four slices and a bit, with ETag, so the object is stored in slices.
    let size = 4 * 65_536 + 100;
    let big: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
    let served = big.clone();
    let origin = Origin::start(move |_| {
        Reply::ok(served.clone())
            .header("cache-control", "max-age=600")
            .header("etag", "\"big\"")
    })
    .await;
    let dir = TempDir::new("sliced");
    let sliced = |config: &mut Config| {
        with_disk(config, &dir.0);
        config.cache.slice_size = ByteSize(65_536);
    };
    let first = node_with(&origin, sliced).await;
    disk_ready(&first).await;
    fetch(&first, "/big").await;
    let (_, headers, body) = fetch(&first, "/big").await;
    assert_eq!(cache_status(&headers), "HIT");
    assert!(body == big);
    // The head and its five slices, each on its second request.
    assert!(eventually(|| disk_stats(&first).entries == 6).await);
    shut_down(&first);

    let second = node_with(&origin, sliced).await;
    disk_ready(&second).await;
    let before = origin.seen().len();
    let (status, headers, body) = fetch(&second, "/big").await;
    assert_eq!((status, cache_status(&headers)), (200, "HIT"));
    assert!(body == big);
    let (status, _, body) = get_with(
        &second,
        "/big",
        &[("host", "disk.test"), ("range", "bytes=200000-200099")],
    )
    .await;
    assert_eq!(status, 206);
    assert!(body[..] == big[200_000..200_100]);
    assert_eq!(origin.seen().len(), before, "all of it from disk");
}

#[tokio::test]
async fn a_ban_outlives_a_restart() {
    let origin = origin().await;
    let dir = TempDir::new("ban");
    let first = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&first).await;
    for path in ["/old/x", "/old/x", "/kept", "/kept"] {
        fetch(&first, path).await;
    }
    assert!(eventually(|| disk_stats(&first).objects_written == 2).await);
    let ban = client()
        .post(format!(
            "http://{}/ban?prefix=http://disk.test/old/",
            first.admin.unwrap()
        ))
        .header("x-shoal-admin", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(ban.status(), 200);
    shut_down(&first);

    let second = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&second).await;
    let (_, headers, _) = fetch(&second, "/old/x").await;
    assert_eq!(
        cache_status(&headers),
        "MISS",
        "the ban still holds for what was on disk"
    );
    let (_, headers, _) = fetch(&second, "/kept").await;
    assert_eq!(cache_status(&headers), "HIT");
}

/// A directory that cannot be used at start (here its path runs through a file) is tried
/// again with back-off, and used as soon as it can be, without a restart.
#[tokio::test]
async fn a_directory_that_fails_is_tried_again_and_used_once_it_works() {
    let origin = origin().await;
    let dir = TempDir::new("comes-back");
    let blocker = dir.0.join("not-yet");
    std::fs::write(&blocker, b"a file where the directory should be").unwrap();
    let cache = blocker.join("cache");
    let node = node_with(&origin, |config| {
        with_disk(config, &cache);
        config.disk.admission = Admission::Always;
    })
    .await;
    let state = || disk_stats(&node).dirs[0].state;
    assert_eq!(state(), shoal::store::disk::VolumeState::Failed);
    fetch(&node, "/before").await;
    assert_eq!(disk_stats(&node).objects_written, 0);
    // The operator fixes it.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir_all(&blocker).unwrap();
    let back = || state() == shoal::store::disk::VolumeState::Ready;
    let mut waited = 0;
    while !back() && waited < 100 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        waited += 1;
    }
    assert!(
        back(),
        "still {:?}: {:?}",
        state(),
        disk_stats(&node).dirs[0].failure
    );
    fetch(&node, "/after").await;
    assert!(eventually(|| disk_stats(&node).objects_written == 1).await);
    assert!(cache.join("segment-00000.dat").exists());
}

/// A directory configured larger than its file system has room for is sized to what fits,
/// instead of failing with "disk full" once the ring gets there.
#[tokio::test]
async fn a_directory_larger_than_its_file_system_uses_what_fits() {
    let origin = origin().await;
    let dir = TempDir::new("too-large");
    let stats = nix::sys::statvfs::statvfs(&dir.0).unwrap();
    let free = stats.blocks_available() * stats.fragment_size();
    let segment = 64u64 << 20;
    let node = node_with(&origin, |config| {
        config.disk.dirs = vec![DiskDir {
            path: dir.0.clone(),
            size: ByteSize(free + (100 << 30)),
        }];
        config.disk.segment_size = Some(ByteSize(segment));
    })
    .await;
    disk_ready(&node).await;
    let stats = disk_stats(&node);
    let dir_stats = &stats.dirs[0];
    assert_eq!(
        dir_stats.state,
        shoal::store::disk::VolumeState::Ready,
        "{stats:?}"
    );
    assert!(
        (dir_stats.segments as u64) * segment <= free,
        "{} segments of 64 MiB on {free} bytes free",
        dir_stats.segments
    );
}

/// The variant a node knows from its disk alone (after a restart, nothing in RAM) still says
/// what the URL varies on: misses for two other variants fetch side by side, each under its
/// own variant, rather than one waiting behind the other's fetch of the URL.
#[tokio::test]
async fn a_variant_on_disk_alone_still_keys_the_fetches_of_the_others() {
    use std::time::Duration;
    let origin = crate::joints::varying_origin(Duration::from_millis(400)).await;
    let dir = TempDir::new("variant");
    let ask = |node: &shoal::Node, encoding: &'static str| {
        let request = client()
            .get(format!("{}/varies", base(node)))
            .header("host", "disk.test")
            .header("accept-encoding", encoding)
            .send();
        async move {
            let response = request.await.unwrap();
            let status = response.headers()["x-cache"].to_str().unwrap().to_owned();
            (status, response.text().await.unwrap())
        }
    };
    let first = node_with(&origin, |config| {
        with_disk(config, &dir.0);
        config.disk.admission = Admission::Always;
    })
    .await;
    disk_ready(&first).await;
    assert_eq!(ask(&first, "gzip").await.1, "variant for gzip");
    assert!(eventually(|| disk_stats(&first).objects_written == 1).await);
    shut_down(&first);

    let second = node_with(&origin, |config| with_disk(config, &dir.0)).await;
    disk_ready(&second).await;
    let br = tokio::spawn(ask(&second, "br"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let deflate = tokio::spawn(ask(&second, "deflate"));
    assert_eq!(br.await.unwrap().1, "variant for br");
    assert_eq!(deflate.await.unwrap().1, "variant for deflate");
    assert_eq!(origin.count("/varies"), 3, "one fetch per variant");
    assert_eq!(
        origin.max_concurrent(),
        2,
        "the two fetches ran side by side"
    );
    let (status, body) = ask(&second, "gzip").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HIT", "variant for gzip")
    );
}
