//! Process figures from Linux: CPU time (user + system) and peak resident set size of a
//! process we started (`/proc/<pid>/stat`, `/proc/<pid>/status`), and this process's own CPU
//! clock in nanoseconds (for short loops, where clock ticks are too coarse).

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

/// A look at a running process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcSample {
    /// utime + stime, every thread, dead ones included.
    pub cpu_ms: f64,
    pub user_ms: f64,
    pub sys_ms: f64,
    /// VmHWM: the peak resident set size so far.
    pub peak_rss_kb: u64,
    /// VmRSS now.
    pub rss_kb: u64,
}

/// Reads `/proc/<pid>`; fails when the process is gone.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let (user_ticks, sys_ticks) = cpu_ticks(&stat).context("parsing /proc/<pid>/stat")?;
    let per_tick_ms = 1000.0 / rustix::param::clock_ticks_per_second() as f64;
    let user_ms = user_ticks as f64 * per_tick_ms;
    let sys_ms = sys_ticks as f64 * per_tick_ms;
    Ok(ProcSample {
        cpu_ms: user_ms + sys_ms,
        user_ms,
        sys_ms,
        peak_rss_kb: status_kb(&status, "VmHWM:").unwrap_or(0),
        rss_kb: status_kb(&status, "VmRSS:").unwrap_or(0),
    })
}

/// utime and stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// This process's CPU time (every thread), in nanoseconds.
pub fn own_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// This process's peak RSS in kB.
pub fn own_peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status_kb(&status, "VmHWM:"))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line =
            "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 37 12 0 0 20 0 3 0 1 2 3";
        assert_eq!(cpu_ticks(line), Some((37, 12)));
    }

    #[test]
    fn our_own_process_can_be_sampled() {
        let mut spin = 0u64;
        let start = own_cpu();
        while own_cpu() - start < Duration::from_millis(20) {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        let me = sample(std::process::id()).expect("sample");
        assert!(me.peak_rss_kb > 0 && me.peak_rss_kb >= me.rss_kb / 2);
        assert!(me.cpu_ms >= 10.0, "{me:?}");
        assert!(own_peak_rss_kb() > 0);
    }
}
