//! The snapshot file: a point-in-time copy of the keyspace plus the Raft
//! metadata it was taken at, in one file so that a rename makes it current
//! atomically.
//!
//! Layout: the magic `ESSNAP01`; a 4-byte length and the bincode-encoded
//! [`SnapshotMeta`]; the 8-byte logical clock; then records, each a 4-byte
//! key length, the key, a 4-byte value length and the stored value (deadline
//! and bytes); and a final `u32::MAX` marker that proves the file is whole.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, DB};

use super::db::{cf, CF_DATA, CF_SM_META};
use super::keyspace::META_CLOCK;
use crate::raft::types::{LogId, SnapshotMeta, StoredMembership};

const MAGIC: &[u8; 8] = b"ESSNAP01";
const END: u32 = u32::MAX;
const CURRENT: &str = "current.snap";

/// State-machine metadata keys shared with the state machine.
pub(crate) const META_APPLIED: &[u8] = b"last_applied";
pub(crate) const META_MEMBERSHIP: &[u8] = b"membership";

pub(crate) fn bincode_encode<T: serde::Serialize>(v: &T) -> io::Result<Vec<u8>> {
    bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(io::Error::other)
}

pub(crate) fn bincode_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::serde::decode_from_slice(b, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes a snapshot of `db` (data, clock, applied log id and membership,
/// all from one consistent view) into `dir`, makes it current, and returns
/// its metadata and an open handle to it.
pub fn build(db: &DB, dir: &Path) -> io::Result<(SnapshotMeta, File)> {
    let view = db.snapshot();
    let meta_cf = cf(db, CF_SM_META);
    let get = |k: &[u8]| view.get_cf(meta_cf, k).map_err(io::Error::other);
    let last_log_id: Option<LogId> = get(META_APPLIED)?.map(|b| bincode_decode(&b)).transpose()?;
    let last_membership: StoredMembership = get(META_MEMBERSHIP)?
        .map(|b| bincode_decode(&b))
        .transpose()?
        .unwrap_or_default();
    let clock = match get(META_CLOCK)? {
        Some(b) => u64::from_be_bytes(
            b.get(..8)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "clock"))?,
        ),
        None => 0,
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
    };

    let tmp = dir.join(format!("build-{}.tmp", std::process::id()));
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        write_header(&mut w, &meta, clock)?;
        for item in view.iterator_cf(cf(db, CF_DATA), IteratorMode::Start) {
            let (k, v) = item.map_err(io::Error::other)?;
            write_record(&mut w, &k, &v)?;
        }
        w.write_all(&END.to_be_bytes())?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    let current = dir.join(CURRENT);
    fs::rename(&tmp, &current)?;
    sync_dir(dir)?;
    Ok((meta, File::open(current)?))
}

/// Makes a copy of `src` (a whole snapshot file) the current snapshot in
/// `dir`, durably, and returns a handle to it.
pub fn adopt(src: &mut File, dir: &Path) -> io::Result<File> {
    src.seek(SeekFrom::Start(0))?;
    let tmp = dir.join(format!("adopt-{}.tmp", std::process::id()));
    {
        let mut out = File::create(&tmp)?;
        io::copy(src, &mut out)?;
        out.sync_all()?;
    }
    let current = dir.join(CURRENT);
    fs::rename(&tmp, &current)?;
    sync_dir(dir)?;
    File::open(current)
}

/// The current snapshot in `dir`, if any: its metadata and an open handle.
pub fn current(dir: &Path) -> io::Result<Option<(SnapshotMeta, File)>> {
    let path = dir.join(CURRENT);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (meta, _) = read_header(&mut BufReader::new(&mut file))?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Some((meta, file)))
}

/// Reads a snapshot from its start: metadata, clock, then calls `record`
/// for every (key, stored value); fails unless the end marker is present.
pub fn read(
    file: &mut File,
    mut record: impl FnMut(&[u8], &[u8]) -> io::Result<()>,
) -> io::Result<(SnapshotMeta, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut r = BufReader::new(file);
    let (meta, clock) = read_header(&mut r)?;
    let mut key = Vec::new();
    let mut val = Vec::new();
    loop {
        let klen = read_u32(&mut r)?;
        if klen == END {
            break;
        }
        read_exact_vec(&mut r, &mut key, klen)?;
        let vlen = read_u32(&mut r)?;
        read_exact_vec(&mut r, &mut val, vlen)?;
        record(&key, &val)?;
    }
    Ok((meta, clock))
}

/// A fresh path in `dir` for receiving a snapshot from the leader.
pub fn incoming_path(dir: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    dir.join(format!("incoming-{nanos}.tmp"))
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

fn write_header(w: &mut impl Write, meta: &SnapshotMeta, clock: u64) -> io::Result<()> {
    let m = bincode_encode(meta)?;
    w.write_all(MAGIC)?;
    w.write_all(&len32(m.len())?.to_be_bytes())?;
    w.write_all(&m)?;
    w.write_all(&clock.to_be_bytes())
}

fn read_header(r: &mut impl Read) -> io::Result<(SnapshotMeta, u64)> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an EventStore snapshot file",
        ));
    }
    let mlen = read_u32(r)?;
    let mut m = Vec::new();
    read_exact_vec(r, &mut m, mlen)?;
    let meta = bincode_decode(&m)?;
    let mut clock = [0u8; 8];
    r.read_exact(&mut clock)?;
    Ok((meta, u64::from_be_bytes(clock)))
}

fn write_record(w: &mut impl Write, k: &[u8], v: &[u8]) -> io::Result<()> {
    w.write_all(&len32(k.len())?.to_be_bytes())?;
    w.write_all(k)?;
    w.write_all(&len32(v.len())?.to_be_bytes())?;
    w.write_all(v)
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|&n| n != END)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "record too large"))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
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
