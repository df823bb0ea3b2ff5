//! `cutover logs SERVICE [-f]`: the output of the service's instances.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::cli::{Cli, LogsArgs};
use crate::context;
use crate::exit::{CliError, OK};

/// Prints the log of the serving (or named) release; with `-f`, keeps printing.
pub fn run(cli: &Cli, args: &LogsArgs) -> Result<i32, CliError> {
    let project = context::load(cli)?;
    let env = context::environment(cli, &project)?;
    context::known_service(&env, &args.service)?;
    let release = match &args.release {
        Some(r) => r.clone(),
        None => {
            let store = context::store(&project, false)?;
            let active = match &store {
                Some(s) => s.active_release(&args.service, &env.name)?,
                None => None,
            };
            let newest = match (&active, &store) {
                (None, Some(s)) => s.releases(&args.service, &env.name, 1)?.into_iter().next(),
                _ => None,
            };
            active.or(newest).map(|r| r.id).ok_or_else(|| {
                CliError::failed(
                    format!("{} has no releases in {} yet", args.service, env.name),
                    Some("deploy it first: `cutover deploy`".into()),
                )
            })?
        }
    };
    let path = context::state_dir(&project).instance_log(&args.service, &release);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(_) if args.follow => loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            if let Ok(f) = std::fs::File::open(&path) {
                break f;
            }
        },
        Err(e) => {
            return Err(CliError::failed(
                format!(
                    "no output of {} {release} yet ({}: {e})",
                    args.service,
                    path.display()
                ),
                None,
            ));
        }
    };
    let mut out = std::io::stdout().lock();
    let mut buf = Vec::new();
    file.read_to_end(&mut buf)
        .map_err(|e| CliError::failed(format!("reading {}: {e}", path.display()), None))?;
    let _ = out.write_all(&buf);
    let _ = out.flush();
    if !args.follow {
        return Ok(OK);
    }
    let mut pos = buf.len() as u64;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(pos);
        if len < pos {
            pos = 0;
        }
        if len > pos {
            buf.clear();
            if file.seek(SeekFrom::Start(pos)).is_ok() && file.read_to_end(&mut buf).is_ok() {
                pos += buf.len() as u64;
                if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
                    return Ok(OK);
                }
            }
        }
    }
}
