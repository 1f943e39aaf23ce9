//! The cluster resources of a submission's jobs (partition, time limit, CPUs, memory, grace
//! period, array parallelism), checked before any script is written: every value that reaches
//! an `#SBATCH` line must be one sbatch accepts and cannot smuggle a second directive.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::quote::directive_safe;

/// Cluster resources of every job of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// `--partition` (a name or a comma-separated list); cluster default if absent.
    pub partition: Option<String>,
    /// `--time`: a SLURM time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`).
    pub time: Option<String>,
    /// `--cpus-per-task` (also vaepipe's thread count through RAYON_NUM_THREADS).
    pub cpus_per_task: u32,
    /// `--mem` per node: a number with an optional K/M/G/T suffix (SLURM's default unit is M).
    pub mem: Option<String>,
    /// Seconds between the USR1 warning and the time limit (`--signal=B:USR1@GRACE`).
    pub grace_s: u32,
    /// At most this many array tasks at once (`--array=0-N%MAX`); no limit if absent.
    pub max_parallel: Option<usize>,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            partition: None,
            time: None,
            cpus_per_task: 1,
            mem: None,
            grace_s: 120,
            max_parallel: None,
        }
    }
}

impl Resources {
    /// Checks every value before it is written into an `#SBATCH` line.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |what: &str, message: String| {
            Err(Error::Invalid {
                what: what.to_string(),
                message,
            })
        };
        if let Some(p) = &self.partition
            && !directive_safe(p)
        {
            return invalid(
                "--partition",
                format!("{p:?} is not a partition name (letters, digits, `_.-`, comma-separated)"),
            );
        }
        if let Some(t) = &self.time {
            let Some(limit) = parse_time_limit(t) else {
                return invalid(
                    "--time",
                    format!("{t:?} is not a SLURM time limit (e.g. 04:00:00, 90, 1-12:00:00)"),
                );
            };
            if let Some(limit) = limit
                && u64::from(self.grace_s) >= limit
            {
                return invalid(
                    "--grace",
                    format!(
                        "{} s of warning before a {t} time limit leaves no time to work; lower --grace or raise --time",
                        self.grace_s
                    ),
                );
            }
        }
        if self.cpus_per_task == 0 {
            return invalid("--cpus-per-task", "must be at least 1".into());
        }
        if let Some(m) = &self.mem
            && !mem_ok(m)
        {
            return invalid(
                "--mem",
                format!("{m:?} is not a memory size (e.g. 4000, 4G, 512M)"),
            );
        }
        if self.grace_s == 0 || self.grace_s > 65_535 {
            return invalid(
                "--grace",
                format!("{} s: must be between 1 and 65535 seconds", self.grace_s),
            );
        }
        if self.max_parallel == Some(0) {
            return invalid("--max-parallel", "must be at least 1".into());
        }
        Ok(())
    }
}

fn mem_ok(m: &str) -> bool {
    let digits = m
        .strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
        .unwrap_or(m);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Parses a SLURM time limit into seconds: `Some(None)` for `UNLIMITED`/`INFINITE`, `None` if
/// the text is not a time limit. Formats (sbatch(1)): `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`.
pub fn parse_time_limit(t: &str) -> Option<Option<u64>> {
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Some(None);
    }
    let num = |s: &str| -> Option<u64> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().ok()
        } else {
            None
        }
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, t),
    };
    let parts: Vec<u64> = rest.split(':').map(num).collect::<Option<_>>()?;
    let secs = match (days, parts.as_slice()) {
        (None, [m]) => m * 60,
        (None, [m, s]) => m * 60 + s,
        (None, [h, m, s]) => h * 3600 + m * 60 + s,
        (Some(d), [h]) => d * 86_400 + h * 3600,
        (Some(d), [h, m]) => d * 86_400 + h * 3600 + m * 60,
        (Some(d), [h, m, s]) => d * 86_400 + h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(Some(secs))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every resource set (also used by the script tests).
    pub(crate) fn full() -> Resources {
        Resources {
            partition: Some("gpu".into()),
            time: Some("04:00:00".into()),
            cpus_per_task: 2,
            mem: Some("4G".into()),
            grace_s: 90,
            max_parallel: Some(2),
        }
    }

    #[test]
    fn resources_are_validated() {
        let ok = full();
        assert!(ok.validate().is_ok());
        let bad = [
            Resources {
                partition: Some("gpu\n#SBATCH --x".into()),
                ..full()
            },
            Resources {
                partition: Some("a b".into()),
                ..full()
            },
            Resources {
                time: Some("4h".into()),
                ..full()
            },
            Resources {
                time: Some("00:01:00".into()),
                grace_s: 60,
                ..full()
            },
            Resources {
                mem: Some("4 GB".into()),
                ..full()
            },
            Resources {
                cpus_per_task: 0,
                ..full()
            },
            Resources {
                grace_s: 0,
                ..full()
            },
            Resources {
                grace_s: 70_000,
                time: None,
                ..full()
            },
            Resources {
                max_parallel: Some(0),
                ..full()
            },
        ];
        for r in bad {
            assert!(r.validate().is_err(), "{r:?} accepted");
        }
    }

    #[test]
    fn time_limits_parse_like_sbatch() {
        assert_eq!(parse_time_limit("90"), Some(Some(5400)));
        assert_eq!(parse_time_limit("10:30"), Some(Some(630)));
        assert_eq!(parse_time_limit("04:00:00"), Some(Some(14_400)));
        assert_eq!(parse_time_limit("1-12"), Some(Some(129_600)));
        assert_eq!(parse_time_limit("1-00:30"), Some(Some(88_200)));
        assert_eq!(parse_time_limit("2-01:02:03"), Some(Some(176_523)));
        assert_eq!(parse_time_limit("UNLIMITED"), Some(None));
        for bad in ["", "1:2:3:4", "a", "1-", "-1", "1h", "1-2-3", "1:"] {
            assert_eq!(parse_time_limit(bad), None, "{bad}");
        }
    }
}
