//! One cache directory: a ring of fixed-size segment files written sequentially by one writer
//! thread, read by a small pool of reader threads. Nothing here runs on a network thread.
//!
//! The writer gathers records into a buffer and writes it with one `pwrite` when it holds a
//! megabyte or the queue goes quiet; the index learns of a record only once it is written.
//! When the current segment is full it is synced and sealed with a summary file, and the
//! oldest segment is reused: its index entries are dropped first (FIFO eviction).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::index::{Index, Location};
use super::record::{
    self, Kind, RecordHeader, SummaryEntry, RECORD_HEADER_LEN, RECORD_MAGIC, SEGMENT_HEADER_LEN,
};
use super::Counters;
use crate::cache::CacheKey;
use crate::store::ObjectMeta;

/// Gathered records are written once the buffer holds this much.
const WRITE_BUFFER: usize = 1 << 20;
/// A partly filled buffer is written when no record arrived for this long.
const FLUSH_AFTER: Duration = Duration::from_millis(5);
/// Writes waiting for the writer; beyond this, new ones are dropped (the object stays in RAM).
const WRITE_QUEUE: usize = 1024;
/// Reads waiting for a reader thread; beyond this, a disk hit is treated as a miss.
const READ_QUEUE: usize = 256;
/// Purges waiting for the writer; a writer this far behind is treated as a failed disk.
const MAX_PENDING_TOMBSTONES: usize = 1 << 20;

pub use shoal_api::stats::VolumeState;

/// An object to write.
pub(super) struct WriteJob {
    pub key: CacheKey,
    pub variant: u64,
    pub meta: Arc<ObjectMeta>,
    pub body: Vec<Bytes>,
}

/// A record to read, answered through `reply`.
struct ReadJob {
    location: Location,
    key: CacheKey,
    reply: oneshot::Sender<Result<Bytes, ReadError>>,
}

/// Why a read found nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The record does not verify: torn, flipped bits, or overwritten by a reused segment.
    #[error("record failed its checksum")]
    Corrupt,
    /// The segment was reused for other objects since the index was read.
    #[error("record was overwritten")]
    Overwritten,
    /// Too many reads are waiting; the disk is slow.
    #[error("disk busy")]
    Busy,
    /// The read took longer than `disk.read_timeout`.
    #[error("disk read timed out")]
    TimedOut,
    /// The directory is not in use (failed or rebuilding).
    #[error("directory not in use")]
    Unavailable,
    /// The disk failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// One cache directory.
pub(super) struct Volume {
    pub number: u8,
    pub path: PathBuf,
    pub segment_size: u64,
    files: Vec<Arc<File>>,
    state: AtomicU8,
    failure: Mutex<Option<String>>,
    /// Bytes written into each segment in its current life.
    fill: Vec<AtomicU64>,
    writes: Mutex<Option<SyncSender<WriteJob>>>,
    reads: Option<SyncSender<ReadJob>>,
    tombstones: Mutex<Vec<CacheKey>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub rebuild_millis: AtomicU64,
    /// Reads that timed out since the last one that did not.
    timeouts_in_a_row: AtomicU64,
    /// Held while the directory is in use, so two nodes never share it.
    lock_file: Mutex<Option<File>>,
}

impl Volume {
    /// Opens (creating if needed) the directory with `size` bytes of segments, starts its reader
    /// threads and its writer, which first rebuilds the index from the segments. A directory
    /// that cannot be used gives a failed volume, logged, so the node runs without it.
    pub fn open(
        number: u8,
        path: &Path,
        size: u64,
        segment_size: u64,
        io_threads: usize,
        index: &Arc<Index>,
        counters: &Arc<Counters>,
    ) -> Arc<Volume> {
        match Volume::open_files(path, size, segment_size) {
            Ok((files, lock_file)) => {
                let (reads, read_queue) = mpsc::sync_channel(READ_QUEUE);
                let (writes, write_queue) = mpsc::sync_channel(WRITE_QUEUE);
                let volume = Arc::new(Volume {
                    number,
                    path: path.to_owned(),
                    segment_size,
                    fill: files.iter().map(|_| AtomicU64::new(0)).collect(),
                    files,
                    state: AtomicU8::new(VolumeState::Rebuilding as u8),
                    failure: Mutex::new(None),
                    writes: Mutex::new(Some(writes)),
                    reads: Some(reads),
                    tombstones: Mutex::new(Vec::new()),
                    writer: Mutex::new(None),
                    rebuild_millis: AtomicU64::new(0),
                    timeouts_in_a_row: AtomicU64::new(0),
                    lock_file: Mutex::new(Some(lock_file)),
                });
                let read_queue = Arc::new(Mutex::new(read_queue));
                for thread in 0..io_threads {
                    let volume = Arc::downgrade(&volume);
                    let queue = Arc::clone(&read_queue);
                    let spawned = std::thread::Builder::new()
                        .name(format!("shoal-disk{number}-read{thread}"))
                        .spawn(move || read_loop(&queue, &volume));
                    if let Err(error) = spawned {
                        volume_failed_to_start(path, &error.to_string());
                    }
                }
                let writer = {
                    let volume = Arc::clone(&volume);
                    let index = Arc::clone(index);
                    let counters = Arc::clone(counters);
                    std::thread::Builder::new()
                        .name(format!("shoal-disk{number}-write"))
                        .spawn(move || Writer::start(volume, index, counters, write_queue))
                };
                match writer {
                    Ok(handle) => *lock(&volume.writer) = Some(handle),
                    Err(error) => volume.fail(&index.clone(), &format!("cannot start: {error}")),
                }
                volume
            }
            Err(error) => {
                let reason = format!("{error}");
                volume_failed_to_start(path, &reason);
                Arc::new(Volume {
                    number,
                    path: path.to_owned(),
                    segment_size,
                    files: Vec::new(),
                    state: AtomicU8::new(VolumeState::Failed as u8),
                    failure: Mutex::new(Some(reason)),
                    fill: Vec::new(),
                    writes: Mutex::new(None),
                    reads: None,
                    tombstones: Mutex::new(Vec::new()),
                    writer: Mutex::new(None),
                    rebuild_millis: AtomicU64::new(0),
                    timeouts_in_a_row: AtomicU64::new(0),
                    lock_file: Mutex::new(None),
                })
            }
        }
    }

    fn open_files(
        path: &Path,
        size: u64,
        segment_size: u64,
    ) -> std::io::Result<(Vec<Arc<File>>, File)> {
        std::fs::create_dir_all(path)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join("lock"))?;
        lock.try_lock().map_err(|_| {
            std::io::Error::new(
                ErrorKind::WouldBlock,
                "in use by another process (its lock file is held)",
            )
        })?;
        let size = fit_to_free_space(path, size, segment_size)?;
        let count = (size / segment_size).min(u64::from(u16::MAX)) as usize;
        let files = (0..count)
            .map(|slot| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(segment_path(path, slot))
                    .map(Arc::new)
            })
            .collect::<std::io::Result<_>>()?;
        Ok((files, lock))
    }

    /// Whether it is in use, rebuilding or failed.
    pub fn state(&self) -> VolumeState {
        match self.state.load(Ordering::Acquire) {
            0 => VolumeState::Rebuilding,
            1 => VolumeState::Ready,
            _ => VolumeState::Failed,
        }
    }

    /// Why it failed, if it did.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Segments in the ring.
    pub fn segments(&self) -> usize {
        self.files.len()
    }

    /// Bytes of records held.
    pub fn bytes(&self) -> u64 {
        self.fill
            .iter()
            .map(|fill| fill.load(Ordering::Relaxed))
            .sum()
    }

    /// Stops using the directory: logs why, forgets its objects, drops queued writes.
    pub fn fail(&self, index: &Index, reason: &str) {
        if self.state.swap(VolumeState::Failed as u8, Ordering::AcqRel) == VolumeState::Failed as u8
        {
            return;
        }
        tracing::error!(
            dir = %self.path.display(),
            %reason,
            "disk cache directory disabled; serving from RAM and the origin without it"
        );
        *lock(&self.failure) = Some(reason.to_owned());
        index.remove_volume(self.number);
        lock(&self.writes).take();
    }

    /// Queues an object for writing; false if the queue is full or the volume not in use.
    pub fn write(&self, job: WriteJob) -> bool {
        if self.state() != VolumeState::Ready {
            return false;
        }
        match lock(&self.writes)
            .as_ref()
            .map(|writes| writes.try_send(job))
        {
            Some(Ok(())) => true,
            Some(Err(TrySendError::Full(_) | TrySendError::Disconnected(_))) | None => false,
        }
    }

    /// Queues a tombstone for `key`, so that a restart does not bring its objects back.
    pub fn tombstone(&self, key: CacheKey, index: &Index) {
        if self.state() == VolumeState::Failed {
            return;
        }
        let mut tombstones = lock(&self.tombstones);
        if tombstones.len() >= MAX_PENDING_TOMBSTONES {
            drop(tombstones);
            self.fail(index, "the writer is not keeping up (purges queued)");
            return;
        }
        tombstones.push(key);
    }

    /// Reads and verifies the record at `location`, which must be `key`'s, giving up after
    /// `timeout`: a stalled disk delays a disk hit by that much, and after a few stalls in a
    /// row the directory is dropped.
    pub async fn read(
        &self,
        key: CacheKey,
        location: Location,
        timeout: Duration,
        index: &Index,
    ) -> Result<Bytes, ReadError> {
        if self.state() != VolumeState::Ready {
            return Err(ReadError::Unavailable);
        }
        let (reply, answer) = oneshot::channel();
        let job = ReadJob {
            location,
            key,
            reply,
        };
        match self.reads.as_ref().map(|reads| reads.try_send(job)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => return Err(ReadError::Busy),
            _ => return Err(ReadError::Unavailable),
        }
        match tokio::time::timeout(timeout, answer).await {
            Ok(result) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                result.unwrap_or(Err(ReadError::Unavailable))
            }
            Err(_) => {
                if self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= 3 {
                    self.fail(
                        index,
                        &format!("stalled: three reads in a row took longer than {timeout:?}"),
                    );
                }
                Err(ReadError::TimedOut)
            }
        }
    }

    /// Lets go of the directory's lock (a failed volume, before the directory is opened again).
    pub fn release(&self) {
        lock(&self.lock_file).take();
    }

    /// Ends the writer after it has written and synced everything queued, and lets go of the
    /// directory.
    pub fn shutdown(&self) {
        lock(&self.writes).take();
        if let Some(handle) = lock(&self.writer).take() {
            let _ = handle.join();
        }
        if self.state.swap(VolumeState::Failed as u8, Ordering::AcqRel) != VolumeState::Failed as u8
        {
            *lock(&self.failure) = Some("shut down".into());
        }
        lock(&self.lock_file).take();
    }

    fn read_record(&self, key: CacheKey, location: Location) -> Result<Bytes, ReadError> {
        let file = self
            .files
            .get(location.segment as usize)
            .ok_or(ReadError::Unavailable)?;
        let mut record = vec![0u8; location.length as usize];
        file.read_exact_at(&mut record, u64::from(location.offset))
            .map_err(|error| match error.kind() {
                ErrorKind::UnexpectedEof => ReadError::Corrupt,
                _ => ReadError::Io(error),
            })?;
        let header = RecordHeader::parse(&record).ok_or(ReadError::Corrupt)?;
        if !header.verifies(&record) {
            return Err(ReadError::Corrupt);
        }
        if header.kind != Kind::Object || header.key != key || header.variant != location.variant {
            return Err(ReadError::Overwritten);
        }
        Ok(Bytes::from(record))
    }
}

/// `size`, or what the file system under `path` can hold when that is less: its free space
/// and what the directory's segments take already (segment files grow as they are written, so
/// a ring larger than the disk would fail with "disk full" once it got there). Fewer than four
/// segments is no ring.
fn fit_to_free_space(path: &Path, size: u64, segment_size: u64) -> std::io::Result<u64> {
    let Some(free) = free_space(path) else {
        return Ok(size);
    };
    let held: u64 = (0..(size / segment_size).min(u64::from(u16::MAX)) as usize)
        .filter_map(|slot| std::fs::metadata(segment_path(path, slot)).ok())
        .map(|metadata| metadata.len())
        .sum();
    // A little room left for the summaries and whatever else shares the file system.
    let room = (free + held) / 100 * 95;
    if size <= room {
        return Ok(size);
    }
    if room / segment_size < 4 {
        return Err(std::io::Error::new(
            ErrorKind::StorageFull,
            format!(
                "only {} free, less than four segments",
                crate::config::ByteSize(free)
            ),
        ));
    }
    tracing::warn!(
        dir = %path.display(),
        configured = %crate::config::ByteSize(size),
        free = %crate::config::ByteSize(free),
        using = %crate::config::ByteSize(room / segment_size * segment_size),
        "disk cache directory is larger than its file system has room for; using what fits"
    );
    Ok(room)
}

/// Bytes free for an unprivileged writer on the file system of `path`.
#[cfg(target_os = "linux")]
fn free_space(path: &Path) -> Option<u64> {
    let stats = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stats.blocks_available() * stats.fragment_size())
}

#[cfg(not(target_os = "linux"))]
fn free_space(_: &Path) -> Option<u64> {
    None
}

fn volume_failed_to_start(path: &Path, reason: &str) {
    tracing::error!(
        dir = %path.display(),
        %reason,
        "cannot use disk cache directory; running without it"
    );
}

fn segment_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("segment-{slot:05}.dat"))
}

fn summary_path(dir: &Path, slot: usize) -> PathBuf {
    dir.join(format!("segment-{slot:05}.idx"))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_loop(queue: &Mutex<Receiver<ReadJob>>, volume: &std::sync::Weak<Volume>) {
    loop {
        let job = match lock(queue).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let Some(volume) = volume.upgrade() else {
            return;
        };
        let result = volume.read_record(job.key, job.location);
        let _ = job.reply.send(result);
    }
}

/// The writer thread's state: where the next record goes.
struct Writer {
    volume: Arc<Volume>,
    index: Arc<Index>,
    counters: Arc<Counters>,
    slot: usize,
    sequence: u64,
    /// Where `buffer` will be written in the current segment.
    offset: u64,
    buffer: Vec<u8>,
    /// Records in `buffer`, indexed once it is written.
    pending: Vec<SummaryEntry>,
    /// Every record of the current segment, for its summary.
    summary: Vec<SummaryEntry>,
    /// Keys whose tombstones this flush is writing.
    purged: HashSet<CacheKey>,
}

impl Writer {
    fn start(
        volume: Arc<Volume>,
        index: Arc<Index>,
        counters: Arc<Counters>,
        jobs: Receiver<WriteJob>,
    ) {
        let started = Instant::now();
        let mut writer = Writer {
            volume,
            index,
            counters,
            slot: 0,
            sequence: 0,
            offset: SEGMENT_HEADER_LEN,
            buffer: Vec::with_capacity(WRITE_BUFFER + (2 << 20)),
            pending: Vec::new(),
            summary: Vec::new(),
            purged: HashSet::new(),
        };
        if let Err(error) = writer.rebuild() {
            writer
                .volume
                .fail(&writer.index, &format!("cannot read its segments: {error}"));
            return;
        }
        let millis = started.elapsed().as_millis() as u64;
        writer
            .volume
            .rebuild_millis
            .store(millis, Ordering::Relaxed);
        tracing::info!(
            dir = %writer.volume.path.display(),
            objects = writer.index.count_volume(writer.volume.number),
            millis,
            "disk cache directory ready"
        );
        if writer.volume.state() == VolumeState::Failed {
            return;
        }
        writer
            .volume
            .state
            .store(VolumeState::Ready as u8, Ordering::Release);
        writer.run(&jobs);
    }

    /// Rebuilds the index from the segments: summaries where a segment was sealed, a verified
    /// scan of its records where not (the segment being written when the node stopped).
    fn rebuild(&mut self) -> std::io::Result<()> {
        let volume = Arc::clone(&self.volume);
        let mut lives = Vec::new();
        for (slot, file) in volume.files.iter().enumerate() {
            let mut header = [0u8; 24];
            match file.read_exact_at(&mut header, 0) {
                Ok(()) => {
                    if let Some(sequence) = record::parse_segment_header(&header) {
                        lives.push((sequence, slot));
                    }
                }
                Err(error) if error.kind() == ErrorKind::UnexpectedEof => {}
                Err(error) => return Err(error),
            }
        }
        lives.sort_unstable();
        let mut last: Option<(u64, usize, bool, u64, Vec<SummaryEntry>)> = None;
        for &(sequence, slot) in &lives {
            let summary = std::fs::read(summary_path(&volume.path, slot))
                .ok()
                .and_then(|bytes| record::decode_summary(&bytes))
                .filter(|(summarized, _)| *summarized == sequence);
            let (sealed, entries, end) = match summary {
                Some((_, entries)) => {
                    let end = entries.last().map_or(SEGMENT_HEADER_LEN, |e| {
                        u64::from(e.offset) + u64::from(e.length)
                    });
                    (true, entries, end)
                }
                None => {
                    let (entries, end) = self.scan(slot, sequence)?;
                    (false, entries, end)
                }
            };
            for entry in &entries {
                self.index.apply(volume.number, slot as u16, entry);
            }
            volume.fill[slot].store(end, Ordering::Relaxed);
            last = Some((sequence, slot, sealed, end, entries));
        }
        match last {
            None => self.begin_segment(0, 1)?,
            Some((sequence, slot, sealed, end, entries)) => {
                if sealed {
                    self.begin_segment((slot + 1) % volume.files.len(), sequence + 1)?;
                } else {
                    // Go on writing the segment that was current, after its last good record.
                    self.slot = slot;
                    self.sequence = sequence;
                    self.offset = end;
                    self.summary = entries;
                }
            }
        }
        Ok(())
    }

    /// Reads the records of a segment's current life. A record that is torn, corrupt or from
    /// an earlier life of the segment does not end the scan: it goes on at the next record of
    /// this life that verifies, so one flipped byte loses one object, not every object written
    /// after it. Returns the records and where the last good one ends (where writing goes on).
    fn scan(&self, slot: usize, sequence: u64) -> std::io::Result<(Vec<SummaryEntry>, u64)> {
        let file = &self.volume.files[slot];
        let length = file.metadata()?.len().min(self.volume.segment_size);
        let mut data = vec![0u8; length as usize];
        file.read_exact_at(&mut data, 0)?;
        let mut entries = Vec::new();
        let mut offset = SEGMENT_HEADER_LEN as usize;
        let mut good_end = offset;
        let mut skipped = 0u64;
        while offset < data.len() {
            if let Some(header) = record_at(&data, offset, sequence) {
                entries.push(SummaryEntry {
                    kind: header.kind,
                    key: header.key,
                    variant: header.variant,
                    offset: offset as u32,
                    length: header.record_len() as u32,
                });
                offset += header.record_len() as usize;
                good_end = offset;
                continue;
            }
            // The end of what this life wrote, or damage: either way, look for a later record.
            match next_record(&data, offset, sequence) {
                Some(next) => {
                    skipped += 1;
                    offset = next;
                }
                None => break,
            }
        }
        if skipped > 0 {
            self.counters.corrupt.fetch_add(skipped, Ordering::Relaxed);
            tracing::warn!(
                directory = %self.volume.path.display(),
                segment = slot,
                skipped,
                kept = entries.len(),
                "damaged records skipped while rebuilding the index"
            );
        }
        Ok((entries, good_end as u64))
    }

    fn run(&mut self, jobs: &Receiver<WriteJob>) {
        loop {
            match jobs.recv_timeout(FLUSH_AFTER) {
                Ok(job) => {
                    self.append(&job);
                    if self.buffer.len() >= WRITE_BUFFER {
                        self.flush();
                    }
                }
                Err(RecvTimeoutError::Timeout) => self.flush(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush();
                    if let Err(error) = self.volume.files[self.slot].sync_data() {
                        self.volume
                            .fail(&self.index, &format!("cannot sync: {error}"));
                    }
                    return;
                }
            }
            if self.volume.state() == VolumeState::Failed {
                return;
            }
        }
    }

    fn append(&mut self, job: &WriteJob) {
        let meta = record::encode_meta(&job.meta);
        self.push_record(Kind::Object, job.key, job.variant, &meta, &job.body);
    }

    /// Adds a record to the buffer, moving to the next segment first if it would not fit.
    fn push_record(
        &mut self,
        kind: Kind,
        key: CacheKey,
        variant: u64,
        meta: &[u8],
        body: &[Bytes],
    ) {
        let body_len: u64 = body.iter().map(|piece| piece.len() as u64).sum();
        let length = RECORD_HEADER_LEN as u64 + meta.len() as u64 + body_len;
        if length > self.volume.segment_size - SEGMENT_HEADER_LEN {
            return;
        }
        if self.offset + self.buffer.len() as u64 + length > self.volume.segment_size {
            self.write_buffer();
            if self.volume.state() == VolumeState::Failed || self.next_segment().is_err() {
                return;
            }
        }
        let offset = self.offset + self.buffer.len() as u64;
        record::encode_record(
            &mut self.buffer,
            kind,
            self.sequence,
            key,
            variant,
            meta,
            body,
        );
        self.pending.push(SummaryEntry {
            kind,
            key,
            variant,
            offset: offset as u32,
            length: length as u32,
        });
    }

    /// Writes what is buffered, with the tombstones queued since the last flush after it.
    fn flush(&mut self) {
        let tombstones = std::mem::take(&mut *lock(&self.volume.tombstones));
        self.purged.extend(tombstones.iter().copied());
        for key in tombstones {
            self.push_record(Kind::Tombstone, key, 0, &[], &[]);
        }
        self.write_buffer();
        self.purged.clear();
    }

    /// Writes the buffer and indexes what it held. An object purged while it waited is written
    /// (its tombstone follows it) but not indexed: the purge may already have cleared the
    /// index, and must not be undone by a write that was queued before it.
    fn write_buffer(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let file = &self.volume.files[self.slot];
        if let Err(error) = file.write_all_at(&self.buffer, self.offset) {
            let reason = match error.kind() {
                ErrorKind::StorageFull => format!("disk full: {error}"),
                _ => format!("write failed: {error}"),
            };
            self.volume.fail(&self.index, &reason);
            return;
        }
        let written = self.buffer.len() as u64;
        self.offset += written;
        self.volume.fill[self.slot].store(self.offset, Ordering::Relaxed);
        self.counters
            .bytes_written
            .fetch_add(written, Ordering::Relaxed);
        self.buffer.clear();
        let queued: HashSet<CacheKey> = lock(&self.volume.tombstones).iter().copied().collect();
        for entry in self.pending.drain(..) {
            let purged = self.purged.contains(&entry.key) || queued.contains(&entry.key);
            if entry.kind == Kind::Object && !purged {
                self.index
                    .apply(self.volume.number, self.slot as u16, &entry);
                self.counters
                    .objects_written
                    .fetch_add(1, Ordering::Relaxed);
            }
            self.summary.push(entry);
        }
    }

    /// Seals the current segment and starts the next one in the ring, evicting what it held.
    fn next_segment(&mut self) -> std::io::Result<()> {
        let volume = Arc::clone(&self.volume);
        let result = volume.files[self.slot].sync_data().and_then(|()| {
            let summary = record::encode_summary(self.sequence, &self.summary);
            let path = summary_path(&volume.path, self.slot);
            let temporary = path.with_extension("idx.tmp");
            std::fs::write(&temporary, summary)?;
            std::fs::rename(&temporary, &path)
        });
        let next = (self.slot + 1) % volume.files.len();
        let result = result.and_then(|()| self.begin_segment(next, self.sequence + 1));
        if let Err(error) = &result {
            let reason = match error.kind() {
                ErrorKind::StorageFull => format!("disk full: {error}"),
                _ => format!("cannot start the next segment: {error}"),
            };
            volume.fail(&self.index, &reason);
        }
        result
    }

    /// Starts life `sequence` of segment `slot`: forgets its previous objects, then writes its
    /// header. Its old summary goes first, so a crash in between leaves nothing that points at
    /// reused space.
    fn begin_segment(&mut self, slot: usize, sequence: u64) -> std::io::Result<()> {
        let volume = &self.volume;
        let evicted = self.index.remove_segment(volume.number, slot as u16);
        self.counters
            .evictions
            .fetch_add(evicted as u64, Ordering::Relaxed);
        match std::fs::remove_file(summary_path(&volume.path, slot)) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let mut header = vec![0u8; SEGMENT_HEADER_LEN as usize];
        header[..24].copy_from_slice(&record::segment_header(sequence));
        volume.files[slot].write_all_at(&header, 0)?;
        volume.fill[slot].store(SEGMENT_HEADER_LEN, Ordering::Relaxed);
        self.slot = slot;
        self.sequence = sequence;
        self.offset = SEGMENT_HEADER_LEN;
        self.summary.clear();
        Ok(())
    }
}

/// The header of the record of life `sequence` that starts at `offset` and verifies, if any.
fn record_at(data: &[u8], offset: usize, sequence: u64) -> Option<RecordHeader> {
    let header = RecordHeader::parse(data.get(offset..)?)?;
    let end = offset.checked_add(header.record_len() as usize)?;
    (header.sequence == sequence && end <= data.len() && header.verifies(&data[offset..end]))
        .then_some(header)
}

/// Where the next intact record of life `sequence` after the bad one at `offset` starts. Where
/// the bad record's header still reads, the place after the length it declares is tried first
/// (a flipped byte in a body leaves the header right); otherwise the first later place that
/// holds a whole record of this life whose checksum verifies, so random bytes are never taken
/// for a record. The bytes of a well-formed record could sit inside a stored body (an origin
/// chooses its bodies) and be found by that search; it reaches them only after damage to a
/// header, which is rare enough to accept for a cache.
fn next_record(data: &[u8], offset: usize, sequence: u64) -> Option<usize> {
    if let Some(header) = data.get(offset..).and_then(RecordHeader::parse) {
        let declared_end = offset.saturating_add(header.record_len() as usize);
        if record_at(data, declared_end, sequence).is_some() {
            return Some(declared_end);
        }
    }
    let mut from = offset + 1;
    while let Some(found) = data
        .get(from..)
        .and_then(|rest| memchr::memmem::find(rest, RECORD_MAGIC))
    {
        let candidate = from + found;
        if record_at(data, candidate, sequence).is_some() {
            return Some(candidate);
        }
        from = candidate + 1;
    }
    None
}
