//! Independent evaluations a few at a time: the CPU backend keeps about one core busy per model.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// `f` over `items` with up to `jobs` threads; the results come back in the items' order. After
/// an error no new item starts; the first failing item's error (in order) is returned.
pub fn map_jobs<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    anyhow::ensure!(jobs > 0, "--jobs must be at least 1");
    let results: Vec<Mutex<Option<anyhow::Result<R>>>> =
        items.iter().map(|_| Mutex::new(None)).collect();
    let (next, failed) = (AtomicUsize::new(0), AtomicBool::new(false));
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(items.len()) {
            scope.spawn(|| {
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for (i, slot) in results.into_iter().enumerate() {
        match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(result) => out.push(result?),
            None => anyhow::bail!("item {i} did not run: an earlier one failed"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn results_come_back_in_order_jobs_at_a_time() {
        let (running, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        let items: Vec<u64> = (0..7).collect();
        let out = map_jobs(3, &items, |&x| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            // Later items finish first.
            std::thread::sleep(Duration::from_millis(60 - 8 * x));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(x * 10)
        })
        .unwrap();
        assert_eq!(out, [0, 10, 20, 30, 40, 50, 60]);
        assert_eq!(most.load(Ordering::SeqCst), 3);
        assert!(map_jobs(0, &items, |&x| Ok(x)).is_err());
        assert!(map_jobs(2, &[] as &[u64], |&x| Ok(x)).unwrap().is_empty());
    }

    #[test]
    fn an_error_stops_new_items_and_is_returned() {
        let calls = AtomicUsize::new(0);
        let items: Vec<u64> = (0..5).collect();
        let err = map_jobs(1, &items, |&x| {
            calls.fetch_add(1, Ordering::SeqCst);
            if x == 1 {
                anyhow::bail!("item one broke")
            }
            Ok(x)
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item one broke");
        assert_eq!(calls.load(Ordering::SeqCst), 2, "nothing after the failure");
    }
}
