//! Progress display for `vaepipe run`: indicatif bars on a terminal; plain, periodic,
//! timestamped lines otherwise (SLURM logs, pipes), so a batch log shows what happened.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use vaepipe_engine::{Event, Events, Outcome, Plan};

/// Renders engine events for people.
pub struct Display {
    names: Vec<String>,
    bars: Option<(MultiProgress, Mutex<HashMap<usize, ProgressBar>>)>,
    last_line: Mutex<HashMap<usize, Instant>>,
    quiet: bool,
    t0: Instant,
}

/// Plain-mode progress lines per instance are at most this frequent.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

impl Display {
    /// `bars`: draw progress bars (a terminal); `quiet`: print nothing (JSON mode).
    pub fn new(plan: &Plan, bars: bool, quiet: bool) -> Self {
        let names = plan
            .instances
            .iter()
            .map(|i| {
                let labels: Vec<&str> = i
                    .points
                    .iter()
                    .map(|p| plan.points[*p].label.as_str())
                    .filter(|l| !l.is_empty())
                    .collect();
                if labels.is_empty() || labels.len() == plan.points.len() && plan.points.len() > 1 {
                    i.stage.to_string()
                } else if labels.len() == 1 {
                    format!("{} [{}]", i.stage, labels[0])
                } else {
                    format!("{} [{} points]", i.stage, labels.len())
                }
            })
            .collect();
        let bars = (bars && !quiet).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Display {
            names,
            bars,
            last_line: Mutex::new(HashMap::new()),
            quiet,
            t0: Instant::now(),
        }
    }

    fn name(&self, i: usize) -> &str {
        self.names.get(i).map_or("?", String::as_str)
    }

    fn line(&self, text: String) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => eprintln!("[{:8.1}s] {text}", self.t0.elapsed().as_secs_f64()),
        }
    }

    /// Clears the bars.
    pub fn finish(&self) {
        if let Some((multi, bars)) = &self.bars {
            if let Ok(mut b) = bars.lock() {
                b.drain().for_each(|(_, bar)| bar.finish_and_clear());
            }
            let _ = multi.clear();
        }
    }
}

impl Events for Display {
    fn event(&self, e: &Event) {
        match e {
            Event::Start {
                instance, reason, ..
            } => {
                self.line(format!("{} started ({reason})", self.name(*instance)));
                if let Some((multi, bars)) = &self.bars {
                    let bar = multi.add(ProgressBar::new(0));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:.bold} {bar:30.cyan/blue} {pos}/{len} {elapsed_precise} (eta {eta}) {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("━╸ "),
                    );
                    bar.set_prefix(self.name(*instance).to_string());
                    bar.enable_steady_tick(Duration::from_millis(200));
                    if let Ok(mut b) = bars.lock() {
                        b.insert(*instance, bar);
                    }
                }
            }
            Event::Waiting { instance, holder } => {
                self.line(format!(
                    "{} is being computed by another process ({holder}); waiting to reuse it",
                    self.name(*instance)
                ));
            }
            Event::Progress {
                instance,
                done,
                total,
                message,
            } => {
                if let Some((_, bars)) = &self.bars {
                    if let Some(bar) = bars.lock().ok().and_then(|b| b.get(instance).cloned()) {
                        bar.set_length(*total);
                        bar.set_position(*done);
                        bar.set_message(message.clone());
                    }
                } else if !self.quiet {
                    let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                    let now = Instant::now();
                    let due = last
                        .get(instance)
                        .is_none_or(|t| now.duration_since(*t) >= PLAIN_EVERY);
                    if due {
                        last.insert(*instance, now);
                        let pct = if *total > 0 {
                            100.0 * *done as f64 / *total as f64
                        } else {
                            0.0
                        };
                        drop(last);
                        self.line(format!(
                            "{} {done}/{total} ({pct:.0}%) {message}",
                            self.name(*instance)
                        ));
                    }
                }
            }
            Event::Log { instance, line } => self.line(format!("{}: {line}", self.name(*instance))),
            Event::Finish {
                instance,
                outcome,
                duration_s,
            } => {
                if let Some((_, bars)) = &self.bars
                    && let Some(bar) = bars.lock().ok().and_then(|mut b| b.remove(instance))
                {
                    bar.finish_and_clear();
                }
                let detail = match outcome {
                    Outcome::Failed(e) => format!(": {}", e.lines().next().unwrap_or("")),
                    Outcome::Skipped(e) => format!(" ({e})"),
                    _ => String::new(),
                };
                if *outcome != Outcome::Cached {
                    self.line(format!(
                        "{} {} in {duration_s:.1}s{detail}",
                        self.name(*instance),
                        outcome.name()
                    ));
                }
            }
        }
    }
}
