//! Faults the daemon met that a probe of the database alone would not show: a
//! scheduled firing that failed for a storage reason keeps `/readyz` at 503 until
//! a later firing of that job succeeds.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Open faults by job, shared by the scheduler (which sets and clears them) and
/// the HTTP listener (which reports them).
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Mutex<BTreeMap<String, String>>>);

impl Faults {
    /// Records that `job`'s last firing failed with `error`.
    pub fn set(&self, job: &str, error: String) {
        self.0
            .lock()
            .expect("faults lock is never poisoned")
            .insert(job.to_owned(), error);
    }

    /// Records that `job`'s last firing worked.
    pub fn clear(&self, job: &str) {
        self.0
            .lock()
            .expect("faults lock is never poisoned")
            .remove(job);
    }

    /// One line per open fault, or `None` when there is none.
    pub fn summary(&self) -> Option<String> {
        let faults = self.0.lock().expect("faults lock is never poisoned");
        (!faults.is_empty()).then(|| {
            faults
                .iter()
                .map(|(job, e)| format!("job {job}: the last firing failed: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_stays_until_its_job_fires_again_successfully() {
        let f = Faults::default();
        assert_eq!(f.summary(), None);
        f.set("daily", "database: no such table: runs".into());
        f.set("weekly", "lock folder".into());
        f.clear("daily");
        let s = f.summary().unwrap();
        assert!(s.contains("job weekly") && !s.contains("daily"), "{s}");
        f.clear("weekly");
        assert_eq!(f.summary(), None);
    }
}
