//! The write-ahead record of one partition: every upsert and delete since the last dump, appended and
//! synced before the call returns, so a crash between dumps loses nothing.
//!
//! Record: op (1 byte) ‖ point id (u64 LE) ‖ vector length (u32 LE) ‖ vector (f32 LE) ‖ CRC-32 of all of
//! the above (u32 LE). A torn record at the tail (a crash mid-append, never acknowledged) ends the replay;
//! a bad checksum before the tail means the file is corrupt.

use crate::SearchError;
use ragvault_core::PointId;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

const OP_UPSERT: u8 = 1;
const OP_DELETE: u8 = 2;
/// Far above any embedding model's width; a longer length field means a damaged record.
const MAX_DIMENSION: u32 = 65_536;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum WalRecord {
    Upsert(PointId, Vec<f32>),
    Delete(PointId),
}

pub(crate) struct Wal {
    file: File,
}

impl Wal {
    pub(crate) fn open(path: &Path) -> Result<Wal, SearchError> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Wal { file })
    }

    /// Appends records and syncs them to disk.
    pub(crate) fn append(&mut self, records: &[WalRecord]) -> Result<(), SearchError> {
        let mut out = BufWriter::new(&self.file);
        for record in records {
            let mut bytes = Vec::new();
            match record {
                WalRecord::Upsert(id, vector) => {
                    bytes.push(OP_UPSERT);
                    bytes.extend_from_slice(&id.0.to_le_bytes());
                    let len = u32::try_from(vector.len())
                        .map_err(|_| SearchError::Backend("vector too long".into()))?;
                    bytes.extend_from_slice(&len.to_le_bytes());
                    for x in vector {
                        bytes.extend_from_slice(&x.to_le_bytes());
                    }
                }
                WalRecord::Delete(id) => {
                    bytes.push(OP_DELETE);
                    bytes.extend_from_slice(&id.0.to_le_bytes());
                    bytes.extend_from_slice(&0u32.to_le_bytes());
                }
            }
            let crc = crc32fast::hash(&bytes);
            bytes.extend_from_slice(&crc.to_le_bytes());
            out.write_all(&bytes)?;
        }
        out.flush()?;
        drop(out);
        self.file.sync_data()?;
        Ok(())
    }

    /// Empties the record (after a dump made it redundant).
    pub(crate) fn reset(&mut self) -> Result<(), SearchError> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        Ok(())
    }

    /// Reads every complete record. A torn tail is dropped; a damaged record before it is an error.
    pub(crate) fn replay(path: &Path) -> Result<Vec<WalRecord>, SearchError> {
        let mut bytes = Vec::new();
        match File::open(path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        let mut records = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let header_end = at + 13;
            if header_end > bytes.len() {
                break; // torn tail
            }
            let op = bytes[at];
            let id = u64::from_le_bytes(bytes[at + 1..at + 9].try_into().unwrap_or_default());
            let len = u32::from_le_bytes(bytes[at + 9..at + 13].try_into().unwrap_or_default());
            if len > MAX_DIMENSION || !(op == OP_UPSERT || op == OP_DELETE) {
                return Err(SearchError::Corrupt(format!(
                    "write-ahead record damaged at byte {at}"
                )));
            }
            let body_end = header_end + 4 * len as usize;
            if body_end + 4 > bytes.len() {
                break; // torn tail
            }
            let crc =
                u32::from_le_bytes(bytes[body_end..body_end + 4].try_into().unwrap_or_default());
            if crc32fast::hash(&bytes[at..body_end]) != crc {
                if body_end + 4 == bytes.len() {
                    break; // the last record was being written when the process died
                }
                return Err(SearchError::Corrupt(format!(
                    "write-ahead record checksum mismatch at byte {at}"
                )));
            }
            let record = if op == OP_UPSERT {
                let vector = bytes[header_end..body_end]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect();
                WalRecord::Upsert(PointId(id), vector)
            } else {
                WalRecord::Delete(PointId(id))
            };
            records.push(record);
            at = body_end + 4;
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal.log");
        let mut wal = Wal::open(&path).unwrap();
        let records = vec![
            WalRecord::Upsert(PointId(7), vec![0.5, -1.25, 3.0]),
            WalRecord::Delete(PointId(9)),
            WalRecord::Upsert(PointId(u64::MAX), vec![1.0; 384]),
        ];
        wal.append(&records).unwrap();
        assert_eq!(Wal::replay(&path).unwrap(), records);

        // A crash in the middle of the next append leaves a partial record: it is ignored.
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, [&full[..], &full[..20]].concat()).unwrap();
        assert_eq!(Wal::replay(&path).unwrap(), records);

        // A flipped bit inside an earlier record is corruption, not a tail.
        let mut damaged = full.clone();
        damaged[15] ^= 0x40;
        std::fs::write(&path, &damaged).unwrap();
        assert!(matches!(Wal::replay(&path), Err(SearchError::Corrupt(_))));

        let mut wal = Wal::open(&path).unwrap();
        wal.reset().unwrap();
        assert!(Wal::replay(&path).unwrap().is_empty());
    }
}
