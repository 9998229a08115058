//! What the bench's processes used, read from `/proc` (Linux): CPU time, bytes written to
//! storage, and the peak resident memory; and what the disk holding the data was sent, read
//! from sysfs.

use std::path::{Path, PathBuf};
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

/// The block device holding a folder: its sectors written, from
/// `/sys/dev/block/<major>:<minor>/stat` (its seventh field, in 512-byte units whatever the
/// device's sector). What reaches the disk, the filesystem's journal included, however the page
/// cache counts a process's writes; from every process on the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    stat: PathBuf,
}

impl Device {
    /// The device of `dir`; `None` where sysfs does not tell (tmpfs, overlay, not Linux).
    pub fn of(dir: &Path) -> Option<Device> {
        use std::os::unix::fs::MetadataExt;
        let dev = std::fs::metadata(dir).ok()?.dev();
        let stat = PathBuf::from(format!(
            "/sys/dev/block/{}:{}/stat",
            nix::sys::stat::major(dev),
            nix::sys::stat::minor(dev)
        ));
        let device = Device { stat };
        device.written_bytes().map(|_| device)
    }

    /// Bytes written to the device since it came up.
    fn written_bytes(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(&self.stat).ok()?;
        let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
        Some(sectors.saturating_mul(512))
    }
}

/// The usage of a set of processes between two moments: started with [`Meter::start`], read
/// with [`Meter::used`] while they still run.
pub struct Meter {
    processes: Vec<Process>,
    at_start: Vec<Usage>,
    /// The data's device, and its bytes written at the start.
    device: Option<(Device, u64)>,
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
    /// Written to the data's block device ([`Device`]); `None` if it does not tell.
    pub device_write_bytes: Option<u64>,
}

impl Used {
    /// The sum of two spans' usage (the peak is the larger).
    pub fn add(self, other: Used) -> Used {
        Used {
            cpu: self.cpu + other.cpu,
            write_bytes: sum(self.write_bytes, other.write_bytes),
            written_by_calls: sum(self.written_by_calls, other.written_by_calls),
            peak_rss_bytes: self.peak_rss_bytes.max(other.peak_rss_bytes),
            device_write_bytes: sum(self.device_write_bytes, other.device_write_bytes),
        }
    }
}

/// `a + b`, or `None` if either is unknown.
fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    a.zip(b).map(|(a, b)| a + b)
}

impl Meter {
    /// Starts measuring `processes`, and the block device holding `data_dir`.
    pub fn start(processes: Vec<Process>, data_dir: &Path) -> Meter {
        let at_start = processes.iter().map(|p| p.usage()).collect();
        let device = Device::of(data_dir)
            .and_then(|device| device.written_bytes().map(|bytes| (device, bytes)));
        Meter {
            processes,
            at_start,
            device,
        }
    }

    /// What the processes used since [`Meter::start`].
    pub fn used(&self) -> Used {
        let mut used = Used {
            write_bytes: Some(0),
            written_by_calls: Some(0),
            device_write_bytes: self.device.as_ref().and_then(|(device, at_start)| {
                Some(device.written_bytes()?.saturating_sub(*at_start))
            }),
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

    /// A file written and synced in a folder on a block device shows in the device's bytes
    /// written (where sysfs tells them: a folder beside the sources, not a tmpfs).
    #[test]
    fn the_data_folders_device_counts_a_synced_write() {
        use std::io::Write;
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let Some(device) = Device::of(dir.path()) else {
            assert!(
                !Path::new("/sys/dev/block").exists(),
                "sysfs lists block devices, but not {}'s",
                dir.path().display()
            );
            return;
        };
        let meter = Meter::start(vec![Process::This], dir.path());
        let mut file = std::fs::File::create(dir.path().join("data")).unwrap();
        file.write_all(&vec![7u8; 4 << 20]).unwrap();
        file.sync_all().unwrap();
        let written = meter.used().device_write_bytes.unwrap();
        assert!(written >= 4 << 20, "{written} bytes written to {device:?}");
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
