//! Records made before a measured run ([`super::Load::made_before`]): each grant and record
//! sealed at its home and signed as a submitter would inside the run, written to a file, then
//! taken in turn by the submitters, which only submit them. The ceiling makes its blocks
//! outside its timed spans for the same reason: sealing and signing are the clients' and the
//! homes' work, not the validators'.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};
use ledger::SignedTx;

use super::Population;
use crate::error::NodeError;
use crate::handle::NodeHandle;

/// Records made at once: each round is written out before the next is sealed.
const ROUND: u64 = 4_096;
/// Seals in flight at once while making, as the prefill's.
const SEALS_IN_FLIGHT: usize = 1_024;

/// Makes records `0..records` of `people`, sealed at their homes among `handles` (whose key
/// services keep the data keys, as for a seal inside the run), into `file`, synced before it
/// returns so that its pages are not written back during the run. `progress` sees the count
/// made after each round.
pub(super) async fn make(
    people: &Population,
    handles: &[NodeHandle],
    records: u64,
    file: &Path,
    mut progress: impl FnMut(u64),
) -> Result<(), NodeError> {
    let mut out = BufWriter::new(File::create(file)?);
    let mut made = 0;
    while made < records {
        let round = (records - made).min(ROUND);
        let pairs: Vec<[SignedTx; 2]> = futures::stream::iter(made..made + round)
            .map(|i| people.sealed_pair(i, handles))
            .buffered(SEALS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (i, pair) in (made..).zip(pairs) {
            let bytes = borsh::to_vec(&(i, pair))?;
            let length = u32::try_from(bytes.len())
                .map_err(|_| NodeError::Config("a made record over 4 GiB".into()))?;
            out.write_all(&length.to_le_bytes())?;
            out.write_all(&bytes)?;
        }
        made += round;
        progress(made);
    }
    out.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()?;
    Ok(())
}

/// The made records of a file [`make`] wrote, taken in turn.
pub(super) struct Made {
    reader: Mutex<BufReader<File>>,
}

impl Made {
    pub(super) fn open(file: &Path) -> Result<Made, NodeError> {
        Ok(Made {
            reader: Mutex::new(BufReader::new(File::open(file)?)),
        })
    }

    /// The next made record, its number and its grant and record; `None` once every one is
    /// taken (or the file cannot be read: the submitter then makes its own).
    pub(super) fn take(&self) -> Option<(u64, [SignedTx; 2])> {
        let mut reader = self.reader.lock().ok()?;
        let mut length = [0u8; 4];
        reader.read_exact(&mut length).ok()?;
        let mut bytes = vec![0; u32::from_le_bytes(length) as usize];
        reader.read_exact(&mut bytes).ok()?;
        borsh::from_slice(&bytes).ok()
    }
}

/// Removes the made records' file when dropped.
pub(super) struct Removed(pub(super) std::path::PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
