//! CPU sets, pinning and memory locking (SPEC §6).
//!
//! Decides nothing about which thread goes where: the daemon does that from the
//! profile's [`Cores`](crate::profile::Cores). This module only speaks the
//! kernel's cpulist notation and applies or reads affinity.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::unistd::Pid;

/// A set of CPU numbers, written in the kernel's cpulist notation (`0`, `1-3`, `0,2-3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CpuList(BTreeSet<usize>);

/// A cpulist that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cpu list {text:?}: {why}")]
pub struct CpuListError {
    text: String,
    why: &'static str,
}

/// The highest CPU number accepted; far above any board we ship, low enough to
/// stop a typo like `0-99999999` from allocating.
const MAX_CPU: usize = 4095;

impl CpuList {
    /// The CPUs, in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().copied()
    }

    /// How many CPUs.
    #[must_use]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No CPU at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `cpu` is in the set.
    #[must_use]
    pub fn contains(&self, cpu: usize) -> bool {
        self.0.contains(&cpu)
    }

    /// Whether every CPU of `self` is in `other`.
    #[must_use]
    pub fn is_subset(&self, other: &CpuList) -> bool {
        self.0.is_subset(&other.0)
    }

    /// Whether the two sets share a CPU.
    #[must_use]
    pub fn intersects(&self, other: &CpuList) -> bool {
        !self.0.is_disjoint(&other.0)
    }
}

impl FromIterator<usize> for CpuList {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        CpuList(iter.into_iter().collect())
    }
}

impl FromStr for CpuList {
    type Err = CpuListError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why| CpuListError {
            text: text.to_owned(),
            why,
        };
        let trimmed = text.trim();
        let mut set = BTreeSet::new();
        if trimmed.is_empty() {
            return Ok(CpuList(set));
        }
        let number = |s: &str| -> Result<usize, CpuListError> {
            let n: usize = s.trim().parse().map_err(|_| err("not a cpu number"))?;
            if n > MAX_CPU {
                return Err(err("cpu number too large"));
            }
            Ok(n)
        };
        for part in trimmed.split(',') {
            match part.split_once('-') {
                Some((first, last)) => {
                    let (first, last) = (number(first)?, number(last)?);
                    if first > last {
                        return Err(err("range runs backwards"));
                    }
                    set.extend(first..=last);
                }
                None => {
                    set.insert(number(part)?);
                }
            }
        }
        Ok(CpuList(set))
    }
}

impl TryFrom<String> for CpuList {
    type Error = CpuListError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl fmt::Display for CpuList {
    /// The canonical cpulist: ascending, runs folded into ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut cpus = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(start) = cpus.next() {
            let mut end = start;
            while cpus.peek() == Some(&(end + 1)) {
                end += 1;
                let _ = cpus.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// Pinning or reading affinity failed.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    /// The kernel refused the affinity.
    #[error("sched_setaffinity({cpus}) failed: {source}")]
    Set {
        /// What was asked for.
        cpus: String,
        /// Why it failed.
        source: nix::Error,
    },
    /// The kernel refused to tell.
    #[error("sched_getaffinity failed: {0}")]
    Get(nix::Error),
    /// An empty set or a CPU beyond what the kernel's set can hold.
    #[error("cannot pin to cpu list {0:?}")]
    Unusable(String),
    /// `/proc` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `/proc` said something unexpected.
    #[error("{path}: {why}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        why: String,
    },
}

/// Pins the calling thread to `cpus`.
pub fn pin_current_thread(cpus: &CpuList) -> Result<(), AffinityError> {
    let unusable = || AffinityError::Unusable(cpus.to_string());
    if cpus.is_empty() {
        return Err(unusable());
    }
    let mut set = CpuSet::new();
    for cpu in cpus.iter() {
        set.set(cpu).map_err(|_| unusable())?;
    }
    // Pid 0 is the calling thread, not the whole process: each worker pins itself.
    sched_setaffinity(Pid::from_raw(0), &set).map_err(|source| AffinityError::Set {
        cpus: cpus.to_string(),
        source,
    })
}

/// The CPUs the calling thread may run on, as the scheduler holds them.
pub fn current_thread_cpus() -> Result<CpuList, AffinityError> {
    let set = sched_getaffinity(Pid::from_raw(0)).map_err(AffinityError::Get)?;
    Ok((0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
        .collect())
}

/// The calling thread's kernel thread id, for [`thread_allowed_cpus`].
#[must_use]
pub fn current_tid() -> i32 {
    nix::unistd::gettid().as_raw()
}

/// The CPUs thread `tid` of this process may run on, read from
/// `/proc/self/task/TID/status` (`Cpus_allowed_list`): what `show health` prints,
/// because it is the kernel's view rather than what we believe we asked for.
pub fn thread_allowed_cpus(tid: i32) -> Result<CpuList, AffinityError> {
    status_allowed_cpus(&PathBuf::from(format!("/proc/self/task/{tid}/status")))
}

fn status_allowed_cpus(path: &Path) -> Result<CpuList, AffinityError> {
    let text = std::fs::read_to_string(path).map_err(|source| AffinityError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_allowed_list(&text).map_err(|why| AffinityError::Parse {
        path: path.to_owned(),
        why,
    })
}

fn parse_allowed_list(status: &str) -> Result<CpuList, String> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| "no Cpus_allowed_list line".to_owned())?;
    value
        .trim()
        .parse()
        .map_err(|e: CpuListError| e.to_string())
}

/// One thread of this process as the kernel schedules it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadAffinity {
    /// Kernel thread id.
    pub tid: i32,
    /// Thread name (`comm`), as set with `std::thread::Builder::name`.
    pub name: String,
    /// `Cpus_allowed_list`.
    pub cpus: CpuList,
}

/// Every thread of this process with the CPUs it may run on, by thread id:
/// the pinning as the kernel sees it, for `show health`. Threads that end
/// while being read are left out.
pub fn process_threads() -> Result<Vec<ThreadAffinity>, AffinityError> {
    threads_under(Path::new("/proc/self/task"))
}

fn threads_under(task_dir: &Path) -> Result<Vec<ThreadAffinity>, AffinityError> {
    let entries = std::fs::read_dir(task_dir).map_err(|source| AffinityError::Read {
        path: task_dir.to_owned(),
        source,
    })?;
    let mut threads: Vec<ThreadAffinity> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let tid = e.file_name().to_str()?.parse().ok()?;
            let name = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let cpus = status_allowed_cpus(&e.path().join("status")).ok()?;
            Some(ThreadAffinity {
                tid,
                name: name.trim_end().to_owned(),
                cpus,
            })
        })
        .collect();
    threads.sort_by_key(|t| t.tid);
    Ok(threads)
}

/// Gives the calling thread the real-time `SCHED_FIFO` policy at `priority`
/// (1..=99). For a SIP worker alone on an isolated core; a FIFO thread that
/// never sleeps starves everything else on its core, per-CPU kernel threads
/// included, so only use it where the worker blocks in the kernel when idle.
#[allow(unsafe_code)]
pub fn set_fifo_priority(priority: i32) -> Result<(), std::io::Error> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 is the calling thread; `param` is a live, initialised
    // sched_param that the kernel only reads. nix offers no wrapper for this.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A cpulist file of the kernel, such as `/sys/devices/system/cpu/online` or
/// `/sys/devices/system/cpu/isolated` (empty when nothing is isolated).
pub fn read_cpulist(path: &Path) -> Result<CpuList, AffinityError> {
    let text = std::fs::read_to_string(path).map_err(|source| AffinityError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.trim()
        .parse()
        .map_err(|e: CpuListError| AffinityError::Parse {
            path: path.to_owned(),
            why: e.to_string(),
        })
}

/// The CPUs the kernel has online.
pub fn online_cpus() -> Result<CpuList, AffinityError> {
    read_cpulist(Path::new("/sys/devices/system/cpu/online"))
}

/// The CPUs isolated by `isolcpus=` on the kernel command line.
pub fn isolated_cpus() -> Result<CpuList, AffinityError> {
    read_cpulist(Path::new("/sys/devices/system/cpu/isolated"))
}

/// Locking memory failed.
#[derive(Debug, thiserror::Error)]
#[error("mlockall(MCL_CURRENT | MCL_FUTURE) failed: {0} (RLIMIT_MEMLOCK, or not root?)")]
pub struct LockMemoryError(nix::Error);

/// Locks all current and future pages of the process in RAM, so that a SIP
/// worker never waits on a page fault to disk.
pub fn lock_memory() -> Result<(), LockMemoryError> {
    mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).map_err(LockMemoryError)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> CpuList {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn cpulists_parse_and_print_canonically() {
        assert_eq!(list("0").to_string(), "0");
        assert_eq!(list("1-3").to_string(), "1-3");
        assert_eq!(list("3,1,2,7").to_string(), "1-3,7");
        assert_eq!(list("0-1, 4-5").to_string(), "0-1,4-5");
        assert!(list("").is_empty());
        assert!("1-x".parse::<CpuList>().is_err());
        assert!("3-1".parse::<CpuList>().is_err());
        assert!("0-99999999".parse::<CpuList>().is_err());
    }

    #[test]
    fn allowed_list_is_read_from_proc_status_text() {
        let status = "Name:\tsbcd\nCpus_allowed:\t0e\nCpus_allowed_list:\t1-3\nMems_allowed:\t1\n";
        assert_eq!(parse_allowed_list(status), Ok(list("1-3")));
        assert!(parse_allowed_list("Name: x\n").is_err());
    }

    #[test]
    fn this_thread_can_be_read_and_pinned_where_it_already_runs() {
        let allowed = current_thread_cpus().unwrap_or_default();
        assert!(!allowed.is_empty());
        let from_proc = thread_allowed_cpus(current_tid()).ok();
        assert_eq!(from_proc.as_ref(), Some(&allowed));
        // Re-pinning to the same set changes nothing and must succeed.
        assert!(pin_current_thread(&allowed).is_ok());
        assert!(pin_current_thread(&CpuList::default()).is_err());
    }

    #[test]
    fn process_threads_include_this_one_by_name() {
        let tid = current_tid();
        let threads = process_threads().unwrap_or_default();
        let me = threads.iter().find(|t| t.tid == tid);
        assert!(me.is_some_and(|t| !t.cpus.is_empty()), "{threads:?}");
    }

    #[test]
    fn fifo_priority_out_of_range_is_refused() {
        // Priority 0 is never valid for SCHED_FIFO, root or not; the thread is left as it was.
        assert!(set_fifo_priority(0).is_err());
    }
}
