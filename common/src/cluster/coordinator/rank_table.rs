//! Which ranks are taken, and by which session: claimed when a worker is admitted, released
//! when its session ends or the engine declares it lost, so a replacement can take the rank.

use std::sync::{Arc, Mutex};

/// The run's ranks `0..world`, shared by the service (claims) and the engine (releases).
#[derive(Clone, Debug)]
pub struct RankTable {
    owners: Arc<Mutex<Vec<Option<u64>>>>,
}

/// Why a rank could not be claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimRefused {
    /// The requested rank does not exist.
    OutOfRange(String),
    /// The rank, or every rank, is taken for now; a lost worker's may free up.
    Taken(String),
}

impl RankTable {
    /// `world` free ranks.
    pub fn new(world: usize) -> Self {
        RankTable {
            owners: Arc::new(Mutex::new(vec![None; world])),
        }
    }

    /// Takes `requested`, or the lowest free rank, for `session`.
    pub fn claim(&self, requested: Option<u32>, session: u64) -> Result<u32, ClaimRefused> {
        // A poisoned lock means another thread panicked mid-update; the table itself (plain
        // options) is still consistent, so keep using it.
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        let world = owners.len();
        let rank = match requested {
            Some(r) if r as usize >= world => {
                return Err(ClaimRefused::OutOfRange(format!(
                    "rank {r} is out of range for {world} workers"
                )));
            }
            Some(r) if owners[r as usize].is_some() => {
                return Err(ClaimRefused::Taken(format!("rank {r} is already taken")));
            }
            Some(r) => r as usize,
            None => owners.iter().position(Option::is_none).ok_or_else(|| {
                ClaimRefused::Taken(format!("the run already has all {world} workers"))
            })?,
        };
        owners[rank] = Some(session);
        Ok(rank as u32)
    }

    /// Frees `rank` if `session` still holds it.
    pub fn release(&self, rank: u32, session: u64) {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(owner) = owners.get_mut(rank as usize)
            && *owner == Some(session)
        {
            *owner = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_releases_by_session() {
        let t = RankTable::new(2);
        assert_eq!(t.claim(None, 10), Ok(0));
        assert_eq!(t.claim(Some(1), 11), Ok(1));
        assert!(matches!(t.claim(None, 12), Err(ClaimRefused::Taken(_))));
        assert!(matches!(
            t.claim(Some(5), 12),
            Err(ClaimRefused::OutOfRange(_))
        ));
        t.release(0, 99);
        assert!(matches!(t.claim(Some(0), 12), Err(ClaimRefused::Taken(_))));
        t.release(0, 10);
        assert_eq!(t.claim(Some(0), 12), Ok(0));
    }
}
