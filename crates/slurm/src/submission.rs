//! A submission: its directory in the store (`<store>/slurm/<pipeline>/<id>/`: the three
//! scripts, `logs/`, `submission.json`), writing the scripts ([`prepare`]), handing them to
//! sbatch with their dependencies ([`submit`]), and the record `vaepipe status` reads back
//! ([`Submission`], [`latest`]).
//!
//! ```text
//! shared job (vaepipe run SPEC --shared)       skipped if nothing several points share must run
//!   └─afterok─▶ array 0..N-1 (vaepipe run SPEC --point=<id of point i>), %max at once
//!                 └─afterany─▶ report job (vaepipe report SPEC): renders what exists
//! ```
//!
//! sbatch runs in the submission directory, so the relative `#SBATCH --output=logs/…` patterns
//! land there whatever the store path looks like (no user path ever enters an `#SBATCH` line).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::resources::Resources;
use crate::script::{JobKind, ScriptInputs, render};

/// Version of the `submission.json` layout. 2: the first job is `shared` (`vaepipe run
/// --shared`; version 1 called it `data` and ran `--stage data`) and array tasks pick their
/// point by id. Version 1 records still load.
pub const RECORD_VERSION: u32 = 2;

/// One sweep point as submitted: array task `index` runs it (selected by `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointInfo {
    pub index: usize,
    pub id: String,
    pub label: String,
}

/// One submitted (or, in a dry run, prepared) job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub kind: JobKind,
    /// SLURM's job id (the array's id for the points job); `None` in a dry run.
    pub id: Option<String>,
    /// Script file name, relative to the submission directory.
    pub script: String,
    /// `--output` pattern, relative to the submission directory.
    pub log: String,
    /// The sbatch command line (run in the submission directory).
    pub sbatch: Vec<String>,
}

/// The record of a submission (`submission.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub version: u32,
    pub id: String,
    pub pipeline: String,
    /// The one job name every job of the submission carries.
    pub job_name: String,
    pub dir: PathBuf,
    pub spec: PathBuf,
    pub overrides: Vec<String>,
    pub store: PathBuf,
    pub workdir: PathBuf,
    pub vaepipe: PathBuf,
    pub submitted: String,
    pub dry_run: bool,
    pub points: Vec<PointInfo>,
    pub array_size: usize,
    pub resources: Resources,
    /// Shared job (absent when nothing shared had to run), array job, report job.
    pub jobs: Vec<JobRecord>,
}

impl Submission {
    pub fn job(&self, kind: JobKind) -> Option<&JobRecord> {
        self.jobs.iter().find(|j| j.kind == kind)
    }

    /// The array task that runs the point with id `id`.
    pub fn task_of(&self, id: &str) -> Option<usize> {
        self.points.iter().find(|p| p.id == id).map(|p| p.index)
    }

    /// The SLURM log of array task `index` (once submitted).
    pub fn task_log(&self, index: usize) -> Option<PathBuf> {
        let id = self.job(JobKind::Points)?.id.as_ref()?;
        Some(self.dir.join(JobKind::Points.log_file(id, Some(index))))
    }

    /// The SLURM log of the shared or report job (once submitted).
    pub fn job_log(&self, kind: JobKind) -> Option<PathBuf> {
        let id = self.job(kind)?.id.as_ref()?;
        Some(self.dir.join(kind.log_file(id, None)))
    }

    /// Writes `submission.json` atomically.
    pub fn save(&self) -> Result<(), Error> {
        let path = self.dir.join("submission.json");
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|e| Error::Parse {
            what: path.display().to_string(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        vaepipe_engine::store::write_atomic(&path, &bytes).map_err(|e| Error::Io {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<Submission, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Parse {
            what: path.display().to_string(),
            message: e.to_string(),
        })
    }
}

/// Where the submissions of `pipeline` live in the store at `store_root`.
pub fn pipeline_dir(store_root: &Path, pipeline: &str) -> PathBuf {
    store_root
        .join("slurm")
        .join(vaepipe_engine::store::slug(pipeline))
}

/// The newest real (not dry-run) submission of `pipeline` whose points are exactly
/// `point_ids`, in any order (so a spec edited or overridden into another sweep does not pick
/// up an old submission, while a reordered one does: tasks run their points by id; use
/// [`Submission::task_of`] to find a point's task). Unreadable records are skipped.
pub fn latest(store_root: &Path, pipeline: &str, point_ids: &[String]) -> Option<Submission> {
    let mut wanted: Vec<&String> = point_ids.iter().collect();
    wanted.sort();
    let dir = pipeline_dir(store_root, pipeline);
    let mut ids: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids.iter().rev().find_map(|id| {
        let s = Submission::load(&dir.join(id).join("submission.json")).ok()?;
        let mut ids: Vec<&String> = s.points.iter().map(|p| &p.id).collect();
        ids.sort();
        let same = s.pipeline == pipeline && !s.dry_run && ids == wanted;
        same.then_some(s)
    })
}

/// What `submit` needs besides the scripts' inputs.
#[derive(Debug, Clone)]
pub struct Request {
    pub pipeline: String,
    pub spec: PathBuf,
    pub overrides: Vec<String>,
    /// The store's absolute root.
    pub store: PathBuf,
    pub workdir: PathBuf,
    pub vaepipe: PathBuf,
    pub points: Vec<PointInfo>,
    pub resources: Resources,
    /// Submit the shared job first (`vaepipe run SPEC --shared`): false when every stage
    /// instance that several points share is already stored (or there is none).
    pub shared_job: bool,
    pub tool_version: String,
}

/// A unique, sortable submission id: UTC time plus a few bits of process id and clock.
pub fn new_submission_id() -> String {
    let now = vaepipe_engine::time::now_rfc3339(); // 2026-11-24T10:03:07.123Z
    let compact: String = now
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let salt = (std::process::id() ^ nanos.rotate_left(13)) & 0xffff;
    format!(
        "{}-{}-{salt:04x}",
        &compact[..8.min(compact.len())],
        &compact[8.min(compact.len())..]
    )
}

/// The job name of a submission: `vaepipe-<pipeline slug, at most 40 characters>-<id>`.
pub fn job_name(pipeline: &str, id: &str) -> String {
    let slug: String = vaepipe_engine::store::slug(pipeline)
        .chars()
        .take(40)
        .collect();
    format!("vaepipe-{slug}-{id}")
}

/// Creates the submission directory and writes the scripts; submits nothing. The returned
/// record has no job ids yet (`dry_run: true`).
pub fn prepare(req: &Request) -> Result<Submission, Error> {
    req.resources.validate()?;
    if req.points.is_empty() {
        return Err(Error::Invalid {
            what: "sweep".into(),
            message: "the spec has no sweep point to submit".into(),
        });
    }
    // Task i runs the i-th point, found by its id: ids must be unique.
    for (i, p) in req.points.iter().enumerate() {
        if req.points[..i].iter().any(|q| q.id == p.id) {
            return Err(Error::Invalid {
                what: "sweep".into(),
                message: format!("two sweep points have the id {:?}", p.id),
            });
        }
    }
    let points: Vec<PointInfo> = req
        .points
        .iter()
        .enumerate()
        .map(|(index, p)| PointInfo { index, ..p.clone() })
        .collect();
    let id = new_submission_id();
    let name = job_name(&req.pipeline, &id);
    let dir = pipeline_dir(&req.store, &req.pipeline).join(&id);
    let logs = dir.join("logs");
    let point_ids: Vec<String> = req.points.iter().map(|p| p.id.clone()).collect();
    std::fs::create_dir_all(&logs).map_err(|e| Error::Io {
        path: logs.clone(),
        message: e.to_string(),
    })?;
    let inputs = ScriptInputs {
        vaepipe: &req.vaepipe,
        workdir: &req.workdir,
        store: &req.store,
        spec: &req.spec,
        overrides: &req.overrides,
        pipeline: &req.pipeline,
        submission: &id,
        job_name: &name,
        dir: &dir,
        point_ids: &point_ids,
        resources: &req.resources,
        tool_version: &req.tool_version,
    };
    let mut jobs = Vec::new();
    let kinds: &[JobKind] = if req.shared_job {
        &[JobKind::Shared, JobKind::Points, JobKind::Report]
    } else {
        &[JobKind::Points, JobKind::Report]
    };
    for &kind in kinds {
        let text = render(kind, &inputs)?;
        let path = dir.join(kind.script_name());
        vaepipe_engine::store::write_atomic(&path, text.as_bytes()).map_err(|e| Error::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        jobs.push(JobRecord {
            kind,
            id: None,
            script: kind.script_name(),
            log: kind.log_pattern(),
            sbatch: Vec::new(),
        });
    }
    let record = Submission {
        version: RECORD_VERSION,
        id,
        pipeline: req.pipeline.clone(),
        job_name: name,
        dir,
        spec: req.spec.clone(),
        overrides: req.overrides.clone(),
        store: req.store.clone(),
        workdir: req.workdir.clone(),
        vaepipe: req.vaepipe.clone(),
        submitted: vaepipe_engine::time::now_rfc3339(),
        dry_run: true,
        array_size: points.len(),
        points,
        resources: req.resources.clone(),
        jobs,
    };
    record.save()?;
    Ok(record)
}

/// The SLURM programs used (on PATH by default; tests substitute fakes).
#[derive(Debug, Clone)]
pub struct Tools {
    pub sbatch: PathBuf,
    pub scancel: PathBuf,
    pub squeue: PathBuf,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            sbatch: "sbatch".into(),
            scancel: "scancel".into(),
            squeue: "squeue".into(),
        }
    }
}

/// Submits a prepared submission: shared job, then the array (after the shared job succeeded),
/// then the report (after every array task ended, whatever the outcome). If a later sbatch
/// fails, the jobs already submitted are cancelled so that nothing half-submitted runs. On
/// success the record (with job ids and sbatch command lines) is saved and returned.
pub fn submit(mut record: Submission, tools: &Tools) -> Result<Submission, Error> {
    let mut submitted: Vec<String> = Vec::new();
    let mut previous: Option<(JobKind, String)> = None;
    for job in record.jobs.iter_mut() {
        let mut args = vec!["--parsable".to_string()];
        match (job.kind, &previous) {
            (JobKind::Points, Some((JobKind::Shared, id))) => {
                args.push(format!("--dependency=afterok:{id}"))
            }
            (JobKind::Report, Some((JobKind::Points, id))) => {
                args.push(format!("--dependency=afterany:{id}"))
            }
            _ => {}
        }
        args.push(job.script.clone());
        let result = sbatch(&tools.sbatch, &record.dir, &args);
        let id = match result {
            Ok(id) => id,
            Err(e) => {
                let rollback = cancel(&tools.scancel, &submitted);
                return Err(match rollback {
                    Ok(()) if submitted.is_empty() => e,
                    Ok(()) => Error::Submit {
                        message: format!(
                            "{e}; the jobs submitted before ({}) were cancelled",
                            submitted.join(", ")
                        ),
                    },
                    Err(c) => Error::Submit {
                        message: format!(
                            "{e}; cancelling the jobs submitted before ({}) failed too: {c}",
                            submitted.join(", ")
                        ),
                    },
                });
            }
        };
        job.sbatch = std::iter::once(tools.sbatch.display().to_string())
            .chain(args)
            .collect();
        job.id = Some(id.clone());
        submitted.push(id.clone());
        previous = Some((job.kind, id));
    }
    record.dry_run = false;
    record.submitted = vaepipe_engine::time::now_rfc3339();
    record.save()?;
    Ok(record)
}

/// Runs sbatch in `dir` and returns the job id it prints (`--parsable`: `ID` or `ID;CLUSTER`).
fn sbatch(program: &Path, dir: &Path, args: &[String]) -> Result<String, Error> {
    let command = format!("{} {}", program.display(), args.join(" "));
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| Error::Command {
            command: command.clone(),
            message: if e.kind() == std::io::ErrorKind::NotFound {
                "sbatch not found: is this a SLURM login node?".into()
            } else {
                e.to_string()
            },
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let id = stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::Command {
            command,
            message: format!("unexpected output (expected a job id): {:?}", stdout.trim()),
        });
    }
    Ok(id)
}

fn cancel(program: &Path, ids: &[String]) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let command = format!("{} {}", program.display(), ids.join(" "));
    let out = Command::new(program)
        .args(ids)
        .output()
        .map_err(|e| Error::Command {
            command: command.clone(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn request(store: &Path, shared_job: bool) -> Request {
        Request {
            pipeline: "sweep \"one\"".into(),
            spec: "/exp/sweep.toml".into(),
            overrides: vec!["train.k=5".into()],
            store: store.to_path_buf(),
            workdir: "/exp".into(),
            vaepipe: "/opt/vaepipe".into(),
            points: (0..3)
                .map(|i| PointInfo {
                    index: i,
                    id: format!("p{i}"),
                    label: format!("k={i}"),
                })
                .collect(),
            resources: Resources {
                max_parallel: Some(2),
                ..Resources::default()
            },
            shared_job,
            tool_version: "0.1.0".into(),
        }
    }

    /// A fake sbatch that logs its directory and arguments and prints ids 101, 102, …; it
    /// fails on call number `fail_on` (0 = never).
    fn fake_tools(dir: &Path, fail_on: u32) -> Tools {
        let write = |name: &str, body: String| {
            let p = dir.join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        let calls = dir.join("calls");
        let sbatch = write(
            "sbatch",
            format!(
                "#!/bin/bash\nn=$(( $(cat '{c}.n' 2>/dev/null || echo 0) + 1 )); echo $n > '{c}.n'\n\
                 echo \"$PWD|$*\" >> '{c}'\nif [ $n = {fail_on} ]; then echo 'sbatch: error: Invalid partition' >&2; exit 1; fi\n\
                 echo \"$((100 + n));cluster\"\n",
                c = calls.display()
            ),
        );
        let scancel = write(
            "scancel",
            format!(
                "#!/bin/bash\necho \"$*\" > '{}'\n",
                dir.join("cancelled").display()
            ),
        );
        Tools {
            sbatch,
            scancel,
            squeue: "squeue".into(),
        }
    }

    #[test]
    fn jobs_are_chained_with_dependencies_and_recorded() {
        let tmp = tempfile::tempdir().unwrap();
        let tools = fake_tools(tmp.path(), 0);
        let prepared = prepare(&request(&tmp.path().join("store"), true)).unwrap();
        assert!(prepared.dry_run && prepared.jobs.iter().all(|j| j.id.is_none()));
        for j in &prepared.jobs {
            assert!(prepared.dir.join(&j.script).is_file());
        }
        assert!(
            prepared.dir.join("logs").is_dir(),
            "sbatch does not create the log directory"
        );
        let rec = submit(prepared, &tools).unwrap();
        let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
        let lines: Vec<&str> = calls.lines().collect();
        let dir = rec.dir.display().to_string();
        assert_eq!(
            lines,
            [
                format!("{dir}|--parsable shared.sbatch"),
                format!("{dir}|--parsable --dependency=afterok:101 points.sbatch"),
                format!("{dir}|--parsable --dependency=afterany:102 report.sbatch"),
            ]
        );
        assert!(!rec.dry_run);
        assert_eq!(
            rec.jobs
                .iter()
                .map(|j| j.id.clone().unwrap())
                .collect::<Vec<_>>(),
            ["101", "102", "103"]
        );
        assert_eq!(
            rec.task_log(2).unwrap(),
            rec.dir.join("logs/points-102_2.out")
        );
        // What status reads back is what was submitted.
        let ids: Vec<String> = rec.points.iter().map(|p| p.id.clone()).collect();
        assert_eq!(
            latest(&tmp.path().join("store"), &rec.pipeline, &ids).unwrap(),
            rec
        );
        assert!(
            latest(&tmp.path().join("store"), &rec.pipeline, &ids[..2]).is_none(),
            "another sweep must not match"
        );
        // A reordered spec still finds its submission; its points map to their tasks by id.
        let reordered: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(
            latest(&tmp.path().join("store"), &rec.pipeline, &reordered).unwrap(),
            rec
        );
        assert_eq!((rec.task_of("p2"), rec.task_of("p0")), (Some(2), Some(0)));
        assert_eq!(rec.task_of("p-unknown"), None);
        // The array script runs task i as point ids[i].
        let points = std::fs::read_to_string(rec.dir.join("points.sbatch")).unwrap();
        assert!(points.contains("\nids=(p0 p1 p2)\n"), "{points}");
    }

    #[test]
    fn version_1_records_load_and_point_ids_must_be_unique() {
        let tmp = tempfile::tempdir().unwrap();
        let rec = prepare(&request(&tmp.path().join("store"), true)).unwrap();
        assert_eq!(rec.version, RECORD_VERSION);
        // A record written before the shared job existed: its first job is called `data`.
        let path = rec.dir.join("submission.json");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"kind\": \"shared\"", "\"kind\": \"data\"")
            .replace("\"version\": 2", "\"version\": 1");
        assert!(text.contains("\"kind\": \"data\""), "{text}");
        std::fs::write(&path, text).unwrap();
        let old = Submission::load(&path).unwrap();
        assert_eq!(old.jobs[0].kind, JobKind::Shared);

        let mut req = request(&tmp.path().join("store"), false);
        req.points[2].id = "p0".into();
        let err = prepare(&req).unwrap_err().to_string();
        assert!(err.contains("two sweep points have the id \"p0\""), "{err}");
        // Task indices are positions, whatever the caller's indices say.
        let mut req = request(&tmp.path().join("store"), false);
        req.points.swap(0, 2);
        let rec = prepare(&req).unwrap();
        assert_eq!(rec.task_of("p2"), Some(0));
        assert_eq!(
            rec.points.iter().map(|p| p.index).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }

    #[test]
    fn without_a_shared_job_the_array_has_no_dependency() {
        let tmp = tempfile::tempdir().unwrap();
        let tools = fake_tools(tmp.path(), 0);
        let rec = submit(
            prepare(&request(&tmp.path().join("store"), false)).unwrap(),
            &tools,
        )
        .unwrap();
        let calls = std::fs::read_to_string(tmp.path().join("calls")).unwrap();
        assert!(
            calls
                .lines()
                .next()
                .unwrap()
                .ends_with("|--parsable points.sbatch")
        );
        assert!(rec.job(JobKind::Shared).is_none());
    }

    #[test]
    fn a_failed_submission_cancels_what_was_submitted_and_leaves_no_record_to_poll() {
        let tmp = tempfile::tempdir().unwrap();
        let tools = fake_tools(tmp.path(), 2);
        let store = tmp.path().join("store");
        let req = request(&store, true);
        let err = submit(prepare(&req).unwrap(), &tools)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Invalid partition") && err.contains("cancelled"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("cancelled"))
                .unwrap()
                .trim(),
            "101"
        );
        let ids: Vec<String> = req.points.iter().map(|p| p.id.clone()).collect();
        assert!(
            latest(&store, &req.pipeline, &ids).is_none(),
            "a dry-run/failed record must not be polled"
        );
    }

    #[test]
    fn dry_runs_are_not_polled_and_ids_sort_by_time() {
        let tmp = tempfile::tempdir().unwrap();
        let req = request(&tmp.path().join("store"), true);
        let rec = prepare(&req).unwrap();
        let ids: Vec<String> = req.points.iter().map(|p| p.id.clone()).collect();
        assert!(latest(&req.store, &req.pipeline, &ids).is_none());
        assert!(
            Submission::load(&rec.dir.join("submission.json"))
                .unwrap()
                .dry_run
        );
        let a = new_submission_id();
        assert_eq!(a.len(), "20260101-000000-abcd".len(), "{a}");
        assert!(crate::quote::directive_safe(&job_name("x $(y)\n'z'", &a)));
    }
}
