//! The snapshot file and the directory that holds it: a point-in-time copy
//! of the keyspace plus the Raft metadata it was taken at, in one file so
//! that a rename makes it current atomically.
//!
//! Layout: the magic `ESSNAP02`; a 4-byte length and the bincode-encoded
//! [`SnapshotMeta`]; the 8-byte logical clock; then records, each a 4-byte
//! key length, the key, a 4-byte value length and the stored value (deadline
//! and bytes); a `u32::MAX` end marker; the 8-byte record count; and last
//! the SHA-256 of every byte before it.
//!
//! Integrity rests on that trailer: a file is [`verify`]d (structure, end
//! marker, count, checksum, nothing after it) before it is adopted from a
//! peer, before it is sent to one, and before it replaces the keyspace. A
//! file that fails is never installed; a current snapshot that fails on the
//! node that would send it is set aside and built again.
//!
//! Builds and installs are serialized by [`SnapshotDir`]: a build takes its
//! view of the database only while no install is in progress (and refuses a
//! view that shows one), and a build never replaces a newer current
//! snapshot with an older one.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rocksdb::{IteratorMode, DB};
use sha2::{Digest, Sha256};

use super::db::{cf, CF_DATA, CF_SM_META};
use super::keyspace::META_CLOCK;
use super::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"ESSNAP02";
const END: u32 = u32::MAX;
const CURRENT: &str = "current.snap";
/// Where a current snapshot that failed verification is set aside.
const CORRUPT: &str = "corrupt.snap";
const CHECKSUM_LEN: usize = 32;

/// State-machine metadata keys shared with the state machine.
pub(crate) const META_APPLIED: &[u8] = b"last_applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";
/// Marker written before a snapshot install starts and removed in the same
/// write that finishes it: if present, the keyspace is half-installed.
pub(crate) const META_INSTALLING: &[u8] = b"installing";

/// Encodes `v` as every record of the node's own formats is encoded
/// (bincode, standard configuration): log entries, log metadata, peer
/// messages, snapshot headers. Public for tests and the fuzz targets.
pub fn bincode_encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(io::Error::other)
}

/// Decodes what [`bincode_encode`] made; bytes that are not such a record
/// are an [`io::ErrorKind::InvalidData`] error. Public for tests and the
/// fuzz targets, which feed it untrusted bytes.
///
/// What the decoder may allocate is bounded by the size of `b`: bincode
/// allocates a string's declared length before reading it, so 35 bytes
/// that declare a 4 GiB string would otherwise ask for 4 GiB (and abort
/// the node where there is not that much memory). bincode counts what a
/// decode claims (every number at its in-memory width, every string at
/// its length) against a limit; a real record never claims more than
/// [`CLAIM_PER_BYTE`] bytes per byte of its encoding, so the limit is the
/// smallest of a ladder of powers of four above that.
pub fn bincode_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    let claim = b.len().saturating_mul(CLAIM_PER_BYTE);
    // bincode's limit is a type parameter: one instantiation per rung.
    macro_rules! ladder {
        ($($shift:literal)*) => {
            $(
                if claim <= 1usize << $shift {
                    return decode_within::<T, { 1usize << $shift }>(b);
                }
            )*
        };
    }
    ladder!(10 12 14 16 18 20 22 24 26 28 30 32 34 36 38 40 42 44 46 48 50 52 54 56 58 60 62);
    decode_within::<T, { usize::MAX }>(b)
}

/// The most bytes a bincode decode claims per byte of input for a real
/// record: a number is claimed at its width (8 bytes for a `u64`, 16 for
/// a `u128`) and may be encoded in one byte; a string claims its length
/// plus 8 and is encoded in at least its length plus 1.
const CLAIM_PER_BYTE: usize = 16;

fn decode_within<T: serde::de::DeserializeOwned, const LIMIT: usize>(b: &[u8]) -> io::Result<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard().with_limit::<LIMIT>())
        .map(|(v, _)| v)
        .map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => invalid(format!(
                "the {}-byte record declares more data than it holds",
                b.len()
            )),
            e => io::Error::new(io::ErrorKind::InvalidData, e),
        })
}

/// Like [`bincode_decode`], but bytes left over after the value are an
/// error too: for checking that a stored record is exactly one value.
pub(crate) fn bincode_decode_whole<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    let (v, used) = bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if used != b.len() {
        return Err(invalid(format!(
            "{} bytes left over after the value",
            b.len() - used
        )));
    }
    Ok(v)
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// What [`verify`] found in a whole, intact snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The Raft metadata the snapshot was taken at.
    pub meta: SnapshotMeta,
    /// The logical clock the snapshot was taken at.
    pub clock: u64,
    /// How many records it holds.
    pub records: u64,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The directory that holds a node's current snapshot, and the lock that
/// serializes building, installing and replacing it.
pub struct SnapshotDir {
    dir: PathBuf,
    lock: Mutex<()>,
}

impl SnapshotDir {
    /// Opens `dir` (creating it) and removes temporary files left by an
    /// interrupted build or transfer.
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        remove_leftovers(&dir)?;
        Ok(SnapshotDir {
            dir,
            lock: Mutex::new(()),
        })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it torn.
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a snapshot of `db` (data, clock, applied log id and membership,
    /// all from one consistent view) and makes it current, unless a newer
    /// snapshot became current meanwhile: then that one is kept and
    /// returned. Refuses a view of a half-installed keyspace.
    pub fn build(&self, db: &DB) -> io::Result<(SnapshotMeta, File)> {
        let view = {
            let _installing = self.lock();
            db.snapshot()
        };
        let get = |k: &[u8]| view.get_cf(cf(db, CF_SM_META), k).map_err(io::Error::other);
        if get(META_INSTALLING)?.is_some() {
            return Err(io::Error::other(
                "refusing to build a snapshot of a half-installed keyspace",
            ));
        }
        let last_log_id: Option<LogId> =
            get(META_APPLIED)?.map(|b| bincode_decode(&b)).transpose()?;
        let last_membership: StoredMembership = get(META_MEMBERSHIP)?
            .map(|b| bincode_decode(&b))
            .transpose()?
            .unwrap_or_default();
        let clock = match get(META_CLOCK)? {
            Some(b) => u64::from_be_bytes(
                b.get(..8)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| invalid("clock"))?,
            ),
            None => 0,
        };
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
        };
        let tmp = self.temp_path("build");
        let written = (|| {
            let mut w = SnapshotWriter::create(&tmp, &meta, clock)?;
            for item in view.iterator_cf(cf(db, CF_DATA), IteratorMode::Start) {
                let (k, v) = item.map_err(io::Error::other)?;
                w.record(&k, &v)?;
            }
            w.finish()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        self.publish(&tmp, &meta)
    }

    /// Makes the finished file at `tmp` current unless the current snapshot
    /// is newer; returns whichever is current afterwards.
    fn publish(&self, tmp: &Path, meta: &SnapshotMeta) -> io::Result<(SnapshotMeta, File)> {
        let _guard = self.lock();
        let current = self.dir.join(CURRENT);
        if let Some(existing) = read_meta(&current)? {
            if existing.last_log_id > meta.last_log_id {
                tracing::info!(
                    built = ?meta.last_log_id,
                    current = ?existing.last_log_id,
                    "a newer snapshot became current while this one was built; keeping it"
                );
                fs::remove_file(tmp)?;
                return Ok((existing, File::open(current)?));
            }
        }
        fs::rename(tmp, &current)?;
        sync_dir(&self.dir)?;
        Ok((meta.clone(), File::open(current)?))
    }

    /// Installs `src`, a snapshot received from the leader that must carry
    /// `expected` as its metadata: verifies it whole, makes a copy of it the
    /// current snapshot, then calls `load` with the adopted file, all while
    /// holding the lock so no build sees the keyspace half-loaded. Nothing
    /// is replaced or loaded unless verification passes.
    pub fn install<T>(
        &self,
        src: &mut File,
        expected: &SnapshotMeta,
        load: impl FnOnce(&mut File, &Verified) -> io::Result<T>,
    ) -> io::Result<T> {
        let _guard = self.lock();
        let found = verify(src)?;
        if &found.meta != expected {
            return Err(invalid(format!(
                "snapshot metadata {:?} does not match the file's {:?}",
                expected, found.meta
            )));
        }
        src.seek(SeekFrom::Start(0))?;
        let tmp = self.temp_path("adopt");
        let copied = (|| {
            let mut out = File::create(&tmp)?;
            io::copy(src, &mut out)?;
            out.sync_all()
        })();
        if let Err(e) = copied {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let current = self.dir.join(CURRENT);
        fs::rename(&tmp, &current)?;
        sync_dir(&self.dir)?;
        let mut file = File::open(current)?;
        load(&mut file, &found)
    }

    /// The current snapshot, verified: its metadata and an open handle. A
    /// current snapshot that fails verification is set aside (as
    /// `corrupt.snap`) and a new one is built from `db`, so a damaged file
    /// is never sent to a peer.
    pub fn current(&self, db: &DB) -> io::Result<Option<(SnapshotMeta, File)>> {
        let path = self.dir.join(CURRENT);
        {
            let _guard = self.lock();
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            match verify(&mut file) {
                Ok(v) => {
                    file.seek(SeekFrom::Start(0))?;
                    return Ok(Some((v.meta, file)));
                }
                Err(e) => {
                    tracing::error!(
                        error = %e,
                        file = %path.display(),
                        "the current snapshot failed verification; setting it aside as {CORRUPT} \
                         and building a new one"
                    );
                    fs::rename(&path, self.dir.join(CORRUPT))?;
                    sync_dir(&self.dir)?;
                }
            }
        }
        let (meta, file) = self.build(db)?;
        if meta.last_log_id.is_none() {
            // Nothing applied yet: there is nothing a snapshot could hold.
            return Ok(None);
        }
        Ok(Some((meta, file)))
    }

    fn temp_path(&self, what: &str) -> PathBuf {
        temp_path(&self.dir, what)
    }
}

/// A fresh path in `dir` for receiving a snapshot from the leader; like
/// every temporary file there, it is removed at the next start.
pub fn incoming_path(dir: &Path) -> PathBuf {
    temp_path(dir, "incoming")
}

fn temp_path(dir: &Path, what: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("{what}-{}-{nanos}.tmp", std::process::id()))
}

/// Writes a snapshot file: header, records, then the trailer.
pub struct SnapshotWriter {
    w: HashingWriter<BufWriter<File>>,
    records: u64,
}

impl SnapshotWriter {
    /// Creates the file at `path` and writes the header.
    pub fn create(path: &Path, meta: &SnapshotMeta, clock: u64) -> io::Result<Self> {
        let mut w = HashingWriter {
            inner: BufWriter::new(File::create(path)?),
            hasher: Sha256::new(),
        };
        let m = bincode_encode(meta)?;
        w.write_all(MAGIC)?;
        w.write_all(&len32(m.len())?.to_be_bytes())?;
        w.write_all(&m)?;
        w.write_all(&clock.to_be_bytes())?;
        Ok(SnapshotWriter { w, records: 0 })
    }

    /// Appends one record (encoded location, stored value).
    pub fn record(&mut self, k: &[u8], v: &[u8]) -> io::Result<()> {
        self.w.write_all(&len32(k.len())?.to_be_bytes())?;
        self.w.write_all(k)?;
        self.w.write_all(&len32(v.len())?.to_be_bytes())?;
        self.w.write_all(v)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end marker, the count and the checksum, and syncs the file.
    pub fn finish(mut self) -> io::Result<()> {
        self.w.write_all(&END.to_be_bytes())?;
        self.w.write_all(&self.records.to_be_bytes())?;
        let sum = self.w.hasher.finalize_reset();
        let mut inner = self.w.inner;
        inner.write_all(&sum)?;
        inner.into_inner().map_err(|e| e.into_error())?.sync_all()
    }
}

/// Reads a whole snapshot file (or any seekable reader: the fuzz target
/// passes bytes in memory) from its start and checks it: magic, header,
/// every record's framing, the end marker, the record count, the checksum,
/// and that nothing follows. Returns what the file holds.
pub fn verify<F: Read + Seek>(file: &mut F) -> io::Result<Verified> {
    let mut records = 0u64;
    let (meta, clock) = read(file, |_, _| {
        records += 1;
        Ok(())
    })?;
    let bytes = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Verified {
        meta,
        clock,
        records,
        bytes,
    })
}

/// Reads a snapshot from its start: metadata, clock, then calls `record`
/// for every (key, stored value). Fails, after the last record, unless the
/// trailer (end marker, count, checksum) is whole and correct; callers that
/// must not act on a damaged file [`verify`] it first.
pub fn read<F: Read + Seek>(
    file: &mut F,
    mut record: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<(SnapshotMeta, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut r = HashingReader {
        inner: BufReader::new(&mut *file),
        hasher: Sha256::new(),
    };
    let (meta, clock) = read_header(&mut r)?;
    let mut key = Vec::new();
    let mut val = Vec::new();
    let mut count = 0u64;
    loop {
        let klen = read_u32(&mut r)?;
        if klen == END {
            break;
        }
        read_exact_vec(&mut r, &mut key, klen)?;
        let vlen = read_u32(&mut r)?;
        read_exact_vec(&mut r, &mut val, vlen)?;
        record(&key, &val)?;
        count += 1;
    }
    let mut n = [0u8; 8];
    r.read_exact(&mut n).map_err(truncated)?;
    if u64::from_be_bytes(n) != count {
        return Err(invalid(format!(
            "snapshot record count {} does not match the {count} records read",
            u64::from_be_bytes(n)
        )));
    }
    let computed = r.hasher.finalize_reset();
    let mut stored = [0u8; CHECKSUM_LEN];
    r.inner.read_exact(&mut stored).map_err(truncated)?;
    if computed.as_slice() != stored {
        return Err(invalid("snapshot checksum mismatch: the file is corrupt"));
    }
    let mut extra = [0u8; 1];
    if r.inner.read(&mut extra)? != 0 {
        return Err(invalid("unexpected bytes after the snapshot checksum"));
    }
    Ok((meta, clock))
}

/// The metadata in the header of the snapshot at `path`, if there is one
/// (the file is not verified).
fn read_meta(path: &Path) -> io::Result<Option<SnapshotMeta>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (meta, _) = read_header(&mut BufReader::new(file))?;
    Ok(Some(meta))
}

/// Removes temporary files left by an interrupted build or transfer.
pub fn remove_leftovers(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn read_header(r: &mut impl Read) -> io::Result<(SnapshotMeta, u64)> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(truncated)?;
    if &magic != MAGIC {
        return Err(invalid("not an EventStore snapshot file (version 2)"));
    }
    let mlen = read_u32(r)?;
    let mut m = Vec::new();
    read_exact_vec(r, &mut m, mlen)?;
    let meta = bincode_decode(&m)?;
    let mut clock = [0u8; 8];
    r.read_exact(&mut clock).map_err(truncated)?;
    Ok((meta, u64::from_be_bytes(clock)))
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != END)
        .ok_or_else(|| invalid("record too large"))
}

fn truncated(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        io::Error::new(io::ErrorKind::UnexpectedEof, "truncated snapshot")
    } else {
        e
    }
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(truncated)?;
    Ok(u32::from_be_bytes(b))
}

fn read_exact_vec(r: &mut impl Read, buf: &mut Vec<u8>, len: u32) -> io::Result<()> {
    buf.clear();
    r.take(u64::from(len)).read_to_end(buf)?;
    if buf.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "truncated snapshot",
        ));
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A reader that hashes every byte it hands out.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes every byte it is given.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db;

    fn log_id(index: u64) -> LogId {
        openraft::testing::log_id::<crate::store::types::TypeConfig>(1, 0, index)
    }

    fn meta(index: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(log_id(index)),
            last_membership: StoredMembership::default(),
        }
    }

    /// A view of a keyspace that an install is loading (the marker is set)
    /// must never become a snapshot: its label would not match its data.
    #[test]
    fn a_build_refuses_a_half_installed_keyspace() {
        let dir = tempfile::tempdir().unwrap();
        let database = db::open(&dir.path().join("db")).unwrap();
        let snaps = SnapshotDir::open(dir.path().join("snapshots")).unwrap();
        database
            .put_cf(
                cf(&database, CF_SM_META),
                META_APPLIED,
                bincode_encode(&log_id(7)).unwrap(),
            )
            .unwrap();
        database
            .put_cf(cf(&database, CF_SM_META), META_INSTALLING, [])
            .unwrap();
        database
            .put_cf(cf(&database, CF_DATA), b"half", b"loaded")
            .unwrap();
        let err = snaps.build(&database).unwrap_err();
        assert!(err.to_string().contains("half-installed"), "{err}");
        assert!(read_meta(&snaps.path().join(CURRENT)).unwrap().is_none());

        // Once the install finishes (marker removed), the build goes ahead.
        database
            .delete_cf(cf(&database, CF_SM_META), META_INSTALLING)
            .unwrap();
        let (m, _) = snaps.build(&database).unwrap();
        assert_eq!(m.last_log_id, Some(log_id(7)));
    }

    /// A build that finishes after a newer snapshot became current keeps
    /// the newer one, whichever order the files were written in.
    #[test]
    fn publishing_an_older_build_keeps_the_newer_current_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path().to_path_buf()).unwrap();
        let write = |m: &SnapshotMeta, what: &str| {
            let tmp = snaps.temp_path(what);
            let mut w = SnapshotWriter::create(&tmp, m, 1).unwrap();
            w.record(b"k", b"v").unwrap();
            w.finish().unwrap();
            tmp
        };
        let older = write(&meta(10), "build");
        let newer = write(&meta(20), "adopt");
        let (m, mut f) = snaps.publish(&newer, &meta(20)).unwrap();
        assert_eq!(m, meta(20));
        assert_eq!(verify(&mut f).unwrap().meta, meta(20));
        let (m, mut f) = snaps.publish(&older, &meta(10)).unwrap();
        assert_eq!(m, meta(20), "the older build replaced the newer snapshot");
        assert_eq!(verify(&mut f).unwrap().meta, meta(20));
        assert!(!older.exists(), "the discarded build was left behind");
    }

    #[test]
    fn verify_rejects_every_truncation_and_trailing_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.snap");
        let mut w = SnapshotWriter::create(&path, &meta(3), 42).unwrap();
        for i in 0..5u8 {
            w.record(&[b'k', i], &[i; 9]).unwrap();
        }
        w.finish().unwrap();
        let whole = fs::read(&path).unwrap();
        let v = verify(&mut File::open(&path).unwrap()).unwrap();
        assert_eq!((v.meta, v.clock, v.records), (meta(3), 42, 5));
        for len in 0..whole.len() {
            fs::write(&path, &whole[..len]).unwrap();
            assert!(
                verify(&mut File::open(&path).unwrap()).is_err(),
                "cut at {len}"
            );
        }
        let mut longer = whole.clone();
        longer.push(0);
        fs::write(&path, &longer).unwrap();
        assert!(verify(&mut File::open(&path).unwrap()).is_err());
        for at in [0, 20, whole.len() / 2, whole.len() - 1] {
            let mut flipped = whole.clone();
            flipped[at] ^= 0x10;
            fs::write(&path, &flipped).unwrap();
            assert!(
                verify(&mut File::open(&path).unwrap()).is_err(),
                "flip at {at}"
            );
        }
    }
}
