//! A pool of at most `max` reusable resources (read connections to a SQLite file, or the right
//! to run one memory-hard hash): a caller takes an idle one, opens a new one while fewer than
//! `max` exist, and otherwise waits until another caller gives one back. However many callers
//! run at once (the blocking pool of an HTTP server runs hundreds), the memory the resources
//! hold (a connection's page cache, Argon2id's 19 MiB) stays `max` times one.
use std::sync::{Condvar, Mutex, MutexGuard};

pub struct Pool<T> {
    state: Mutex<State<T>>,
    given_back: Condvar,
    max: usize,
}

struct State<T> {
    idle: Vec<T>,
    /// Resources that exist: idle, in use, or being opened.
    open: usize,
    /// The most that ever existed at once.
    peak_open: usize,
}

impl<T> Pool<T> {
    /// A pool of at most `max` resources (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            state: Mutex::new(State {
                idle: Vec::new(),
                open: 0,
                peak_open: 0,
            }),
            given_back: Condvar::new(),
            max: max.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `work` with a resource: an idle one, else a new one from `open` if fewer than `max`
    /// exist, else the next one given back. `work` must not take a second resource of the same
    /// pool (it could wait for itself). A resource whose `open` failed is not counted.
    pub fn with<R, E>(
        &self,
        open: impl FnOnce() -> Result<T, E>,
        work: impl FnOnce(&mut T) -> R,
    ) -> Result<R, E> {
        let mut state = self.lock();
        let taken = loop {
            if let Some(idle) = state.idle.pop() {
                break Some(idle);
            }
            if state.open < self.max {
                state.open += 1;
                state.peak_open = state.peak_open.max(state.open);
                break None;
            }
            state = self
                .given_back
                .wait(state)
                .unwrap_or_else(|p| p.into_inner());
        };
        drop(state);
        let resource = match taken {
            Some(resource) => resource,
            None => {
                // Frees the place if `open` fails or panics (one that panicked would hold
                // it for good, and after `max` of them every caller would wait for ever).
                let place = Place { pool: self };
                let opened = open();
                match opened {
                    Ok(resource) => {
                        std::mem::forget(place);
                        resource
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        let mut lent = Lent {
            pool: self,
            resource: Some(resource),
        };
        let resource = lent.resource.as_mut().expect("lent until dropped");
        Ok(work(resource))
    }

    /// The most resources that ever existed at once (never more than `max`).
    pub fn peak_open(&self) -> usize {
        self.lock().peak_open
    }
}

/// A place counted in `open` for a resource being opened: freed when dropped (the open
/// failed or panicked), forgotten once the resource is opened.
struct Place<'a, T> {
    pool: &'a Pool<T>,
}

impl<T> Drop for Place<'_, T> {
    fn drop(&mut self) {
        self.pool.lock().open -= 1;
        self.pool.given_back.notify_one();
    }
}

/// Gives the resource back when the work ends. A work that panicked may have left it in any
/// state (a connection inside a transaction): it is dropped instead, and its place freed.
struct Lent<'a, T> {
    pool: &'a Pool<T>,
    resource: Option<T>,
}

impl<T> Drop for Lent<'_, T> {
    fn drop(&mut self) {
        if let Some(resource) = self.resource.take() {
            let mut state = self.pool.lock();
            if std::thread::panicking() {
                state.open -= 1;
            } else {
                state.idle.push(resource);
            }
            drop(state);
            self.pool.given_back.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_than_max_open_or_in_use_under_four_times_as_many_callers() {
        const MAX: usize = 4;
        let pool = Arc::new(Pool::<u32>::new(MAX));
        let opened = Arc::new(AtomicUsize::new(0));
        let in_use = Arc::new(AtomicUsize::new(0));
        let peak_in_use = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(std::sync::Barrier::new(MAX * 4));
        let threads: Vec<_> = (0..MAX * 4)
            .map(|_| {
                let (pool, opened, in_use, peak) = (
                    pool.clone(),
                    opened.clone(),
                    in_use.clone(),
                    peak_in_use.clone(),
                );
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..20 {
                        pool.with(
                            || Ok::<_, ()>(opened.fetch_add(1, Ordering::SeqCst) as u32),
                            |_| {
                                let now = in_use.fetch_add(1, Ordering::SeqCst) + 1;
                                peak.fetch_max(now, Ordering::SeqCst);
                                std::thread::sleep(std::time::Duration::from_millis(1));
                                in_use.fetch_sub(1, Ordering::SeqCst);
                            },
                        )
                        .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(opened.load(Ordering::SeqCst) <= MAX, "opened {opened:?}");
        assert!(peak_in_use.load(Ordering::SeqCst) <= MAX);
        assert!(pool.peak_open() <= MAX);
        // Sixteen callers at once did make it open all four.
        assert_eq!(pool.peak_open(), MAX);
    }

    #[test]
    fn a_failed_open_or_a_panic_frees_its_place_and_a_panicked_resource_is_not_lent_again() {
        let pool = Pool::<u8>::new(1);
        assert_eq!(pool.with(|| Err::<u8, _>("no"), |_| ()), Err("no"));
        assert_eq!(pool.with(|| Ok::<_, ()>(7), |r| *r), Ok(7));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.with(|| Ok::<_, ()>(8), |_| panic!("work failed"))
        }));
        assert!(caught.is_err());
        // The one place is free again, and the resource the panic held (7) was dropped.
        assert_eq!(pool.with(|| Ok::<_, ()>(9), |r| *r), Ok(9));
        assert_eq!(pool.peak_open(), 1);
        // An open that panics frees its place too.
        let pool = Pool::<u8>::new(1);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.with(|| -> Result<u8, ()> { panic!("open failed") }, |_| ())
        }));
        assert!(caught.is_err());
        assert_eq!(pool.with(|| Ok::<_, ()>(3), |r| *r), Ok(3));
    }
}
