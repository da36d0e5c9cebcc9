//! How many threads to run when the user does not say: the server's serving threads and the
//! client's bench threads follow one rule, [`default_threads`].

/// Every core the process was given, or half the machine when it was given all of it.
///
/// The cores given are its affinity mask (what `taskset`, cgroup cpusets and systemd's
/// `CPUAffinity=` set) and a cgroup CPU quota, as the standard library reads them. When they
/// are fewer than the machine's online cores, someone chose them for this process: it uses
/// them all. When it may run everywhere, it takes half (at least one): the two ends of a Unix
/// socket always run on the same machine, and one end busy on every core would take the cores
/// the other end needs.
pub fn default_threads() -> usize {
    let given = std::thread::available_parallelism().map_or(1, usize::from);
    threads_for(given, online_cores())
}

/// [`default_threads`] for `given` cores out of `online`.
fn threads_for(given: usize, online: Option<usize>) -> usize {
    match online {
        Some(online) if given < online => given,
        _ => (given / 2).max(1),
    }
}

/// The machine's online cores, from `/sys/devices/system/cpu/online` (`0-3,8-11`).
fn online_cores() -> Option<usize> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").ok()?;
    count_cpu_list(&list)
}

/// Counts the cores of a kernel CPU list (`0-3,8-11` is 8).
fn count_cpu_list(list: &str) -> Option<usize> {
    list.trim().split(',').try_fold(0, |count, range| {
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (a.parse::<usize>().ok()?, b.parse::<usize>().ok()?),
            None => {
                let cpu = range.parse::<usize>().ok()?;
                (cpu, cpu)
            }
        };
        Some(count + last.checked_sub(first)? + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_chosen_for_the_process_are_all_used_and_a_whole_machine_is_halved() {
        // taskset -c 0-7 on a 16-core machine: all eight.
        assert_eq!(threads_for(8, Some(16)), 8);
        // Nothing chosen: half of 16, half of 2, and never none.
        assert_eq!(threads_for(16, Some(16)), 8);
        assert_eq!(threads_for(2, Some(2)), 1);
        assert_eq!(threads_for(1, Some(1)), 1);
        // The online count unknown: as if the whole machine.
        assert_eq!(threads_for(4, None), 2);
        assert!(default_threads() >= 1);
    }

    #[test]
    fn a_cpu_list_is_counted() {
        assert_eq!(count_cpu_list("0-3,8-11\n"), Some(8));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("0,2,4-5"), Some(4));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
    }

    #[test]
    fn the_online_core_list_is_counted() {
        // This machine's, whatever it is: at least one core, and the affinity mask within it.
        let online = online_cores().expect("/sys/devices/system/cpu/online is readable");
        assert!(online >= 1);
        assert!(std::thread::available_parallelism().unwrap().get() <= online);
    }
}
