//! What the bench's processes used, read from `/proc` (Linux): CPU time, bytes written to
//! storage, and the peak resident memory.

use std::time::Duration;

/// One process's counters at one moment. `None` where `/proc` does not tell (another system,
/// or a field the kernel hides).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// User and system time of every thread so far.
    pub cpu: Duration,
    /// Bytes the process caused to be sent to storage so far (`write_bytes` of `io`).
    pub write_bytes: Option<u64>,
    /// Bytes the process handed to `write`-like calls so far (`wchar` of `io`): files, and in
    /// a validator process its sockets too.
    pub written_by_calls: Option<u64>,
    /// The peak resident set size (`VmHWM` of `status`).
    pub peak_rss_bytes: Option<u64>,
}

/// A process whose usage is read: this one, or a child by its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    This,
    Child(u32),
}

impl Process {
    fn path(self, file: &str) -> String {
        match self {
            Process::This => format!("/proc/self/{file}"),
            Process::Child(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    /// What the process has used so far (zero CPU if `/proc` cannot be read).
    pub fn usage(self) -> Usage {
        let read = |file| std::fs::read_to_string(self.path(file)).ok();
        let io = read("io");
        Usage {
            cpu: read("stat")
                .and_then(|stat| cpu_of_stat(&stat))
                .unwrap_or_default(),
            write_bytes: io.as_deref().and_then(|io| field(io, "write_bytes:")),
            written_by_calls: io.as_deref().and_then(|io| field(io, "wchar:")),
            peak_rss_bytes: read("status")
                .and_then(|status| field(&status, "VmHWM:"))
                .map(|kib| kib * 1024),
        }
    }

    /// Starts a new peak of resident memory at the present size, so that `VmHWM` tells the
    /// peak of what follows (`clear_refs`, 5); false where the kernel does not allow it.
    pub fn reset_peak_rss(self) -> bool {
        std::fs::write(self.path("clear_refs"), "5").is_ok()
    }
}

/// The user and system time of a `/proc/<pid>/stat` line.
fn cpu_of_stat(stat: &str) -> Option<Duration> {
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) of proc(5); the first after the name is field 3.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|hz| u64::try_from(hz).ok())
        .filter(|hz| *hz > 0)?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / per_second,
    ))
}

/// The number after `name` on its line of a `/proc` file of `name value [unit]` lines.
fn field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// The usage of a set of processes between two moments: started with [`Meter::start`], read
/// with [`Meter::used`] while they still run.
pub struct Meter {
    processes: Vec<Process>,
    at_start: Vec<Usage>,
}

/// What a set of processes used over a span.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Used {
    pub cpu: Duration,
    /// Summed over the processes; `None` if any did not tell.
    pub write_bytes: Option<u64>,
    /// Summed over the processes; `None` if any did not tell.
    pub written_by_calls: Option<u64>,
    /// The largest peak among the processes; with validators in child processes, among those
    /// (this one also runs the load generator).
    pub peak_rss_bytes: Option<u64>,
}

impl Used {
    /// The sum of two spans' usage (the peak is the larger).
    pub fn add(self, other: Used) -> Used {
        Used {
            cpu: self.cpu + other.cpu,
            write_bytes: sum(self.write_bytes, other.write_bytes),
            written_by_calls: sum(self.written_by_calls, other.written_by_calls),
            peak_rss_bytes: self.peak_rss_bytes.max(other.peak_rss_bytes),
        }
    }
}

/// `a + b`, or `None` if either is unknown.
fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.zip(b).map(|(a, b)| a + b)
}

impl Meter {
    pub fn start(processes: Vec<Process>) -> Meter {
        let at_start = processes.iter().map(|p| p.usage()).collect();
        Meter {
            processes,
            at_start,
        }
    }

    /// What the processes used since [`Meter::start`].
    pub fn used(&self) -> Used {
        let mut used = Used {
            write_bytes: Some(0),
            written_by_calls: Some(0),
            ..Used::default()
        };
        // With validators in child processes, this one runs the load generator beside its
        // validator: its peak is not a validator's.
        let children = self
            .processes
            .iter()
            .any(|p| matches!(p, Process::Child(_)));
        for (process, start) in self.processes.iter().zip(&self.at_start) {
            let now = process.usage();
            used.cpu += now.cpu.saturating_sub(start.cpu);
            let since = |now: Option<u64>, start: Option<u64>| {
                now.zip(start).map(|(now, start)| now.saturating_sub(start))
            };
            used.write_bytes = sum(used.write_bytes, since(now.write_bytes, start.write_bytes));
            used.written_by_calls = sum(
                used.written_by_calls,
                since(now.written_by_calls, start.written_by_calls),
            );
            if !(children && matches!(process, Process::This)) {
                used.peak_rss_bytes = used.peak_rss_bytes.max(now.peak_rss_bytes);
            }
        }
        used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_read_after_a_command_name_with_spaces_and_parentheses() {
        // Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime ...
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 3 0 1";
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as u64;
        assert_eq!(
            cpu_of_stat(stat),
            Some(Duration::from_nanos(400 * 1_000_000_000 / hz))
        );
        assert_eq!(cpu_of_stat("42 (truncated"), None);
    }

    #[test]
    fn this_process_reads_its_own_usage() {
        let busy = std::time::Instant::now();
        let mut x = 0u64;
        while busy.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let usage = Process::This.usage();
        assert!(x > 0 && usage.cpu > Duration::ZERO, "{usage:?}");
        assert!(
            usage.peak_rss_bytes.is_some_and(|b| b > 1 << 20),
            "{usage:?}"
        );
        assert_eq!(
            field("rchar: 5\nwrite_bytes: 4096\n", "write_bytes:"),
            Some(4096)
        );
        assert_eq!(field("VmHWM:\t  1234 kB\n", "VmHWM:"), Some(1234));
    }
}
