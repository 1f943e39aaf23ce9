//! `vaepipe compare`: the points of specs side by side, from the store only.

use std::process::ExitCode;

use vaepipe_stages::points_of;

use super::common::{Global, load_spec, open_existing_store, usage_error};
use crate::cli::{CompareArgs, SpecArgs};

/// `vaepipe compare`: reads the store only; the logic is in `vaepipe_stages::compare`.
pub fn compare(g: &Global, a: CompareArgs) -> anyhow::Result<ExitCode> {
    use vaepipe_stages::compare as cmp;
    let mut specs = Vec::new();
    for path in &a.specs {
        let args = SpecArgs {
            spec: path.clone(),
            overrides: a.overrides.clone(),
            json: a.json,
        };
        match load_spec(g, &args) {
            Ok(s) => specs.push(cmp::SpecPoints {
                pipeline: s.name().to_string(),
                points: points_of(&s),
            }),
            Err(code) => return Ok(code),
        }
    }
    let registry = vaepipe_stages::registry();
    let store = open_existing_store(g)?;
    let mut c = cmp::compare(&registry, &store, specs)?;
    if let Some(key) = &a.sort
        && let Err(e) = cmp::sort(&mut c, key)
    {
        return usage_error(e);
    }
    if let Some(pair) = &a.diff {
        let d = match cmp::diff(&c, &pair[0], &pair[1]) {
            Ok(d) => d,
            Err(e) => return usage_error(e),
        };
        if a.json {
            println!("{}", serde_json::to_string_pretty(&d)?);
        } else {
            print!("{}", cmp::render_diff(&d, a.width));
        }
        return Ok(ExitCode::SUCCESS);
    }
    if a.json {
        let names: Vec<String> = a.specs.iter().map(|p| p.display().to_string()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&cmp::json_document(&c, &names))?
        );
    } else {
        print!("{}", cmp::render_table(&c, a.width));
    }
    Ok(ExitCode::SUCCESS)
}
