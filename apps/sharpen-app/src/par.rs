//! Ordered parallel maps over scoped threads, for the CPU: the tiny models' kernels are below the
//! size at which the CPU backend threads, so independent batches (validation chunks, evaluation
//! batches) go to a core each.

use std::any::TypeId;

/// Threads for independent batches on backend `B`: one per core on the CPU backend, 1 elsewhere
/// (a GPU takes each batch whole).
pub fn sampling_threads<B: 'static>() -> usize {
    if TypeId::of::<B>() == TypeId::of::<crate::CpuBackend>() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    }
}

/// `f` over `items` on up to `threads` scoped threads (worker `w` takes items `w`, `w + threads`,
/// ...), results in item order. On an error the first one in item order is returned.
pub fn par_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> anyhow::Result<R> + Sync,
) -> anyhow::Result<Vec<R>> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let mut done: Vec<Option<anyhow::Result<R>>> = (0..items.len()).map(|_| None).collect();
    let finished: Vec<Vec<(usize, anyhow::Result<R>)>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                s.spawn(move || {
                    (w..items.len())
                        .step_by(threads)
                        .map(|i| (i, f(&items[i])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    for (i, result) in finished.into_iter().flatten() {
        done[i] = Some(result);
    }
    done.into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_in_order_on_any_thread_count() {
        let items: Vec<u64> = (0..11).collect();
        let one = par_map(&items, 1, |x| Ok(x * x)).unwrap();
        assert_eq!(one, items.iter().map(|x| x * x).collect::<Vec<_>>());
        for threads in [2, 3, 11, 64] {
            let used = std::sync::Mutex::new(std::collections::HashSet::new());
            let many = par_map(&items, threads, |x| {
                used.lock().unwrap().insert(std::thread::current().id());
                Ok(x * x)
            })
            .unwrap();
            assert_eq!(many, one, "{threads} threads");
            assert_eq!(used.into_inner().unwrap().len(), threads.min(items.len()));
        }
        assert!(par_map(&[] as &[u64], 4, |x| Ok(*x)).unwrap().is_empty());
    }

    #[test]
    fn the_first_error_in_item_order_is_returned() {
        let items: Vec<u64> = (0..8).collect();
        let err = par_map(&items, 3, |&x| match x {
            2 | 5 => anyhow::bail!("item {x} failed"),
            _ => Ok(x),
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "item 2 failed");
    }

    #[test]
    fn the_cpu_backend_gets_a_thread_per_core() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(sampling_threads::<crate::CpuBackend>(), cores);
        assert_eq!(sampling_threads::<u8>(), 1);
    }
}
