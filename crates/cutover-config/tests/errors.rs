//! One snapshot per class of configuration error: the `file:line:col: message` line and the
//! help, as a user sees them. Review wording changes in the `.snap` files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use cutover_config::parse;

/// Parses `src` in a fresh project dir holding `api/`, `web/`, `worker/`, `skills/pr-review/`
/// and a file `README.md`; returns every error with its help, the temp dir redacted.
fn errors(src: &str) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    for dir in ["api", "web", "worker", "skills/pr-review"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir");
    }
    std::fs::write(root.join("README.md"), "hi").expect("write");
    match parse(src, Path::new("cutover.toml"), root) {
        Ok(_) => "no error".to_string(),
        Err(e) => e.report().replace(&root.display().to_string(), "[PROJECT]"),
    }
}

macro_rules! case {
    ($name:ident, $src:expr) => {
        #[test]
        fn $name() {
            insta::assert_snapshot!(stringify!($name), errors($src), $src);
        }
    };
}

const HEAD: &str = "[project]\nname = \"demo\"\n";

fn with_head(rest: &str) -> String {
    format!("{HEAD}\n{rest}")
}

case!(toml_syntax, &with_head("[services.api]\npath = api\n"));
case!(
    unknown_key,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"python3 app.py\"\nport = 8080\nhelth = { path = \"/health\" }\n"
    )
);
case!(
    unknown_key_far_from_any,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nzzzzzz = 1\n")
);
case!(
    unknown_top_level_table,
    &with_head("[servces.api]\npath = \"api\"\n")
);
case!(
    unknown_key_in_health,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.health]\nperiod = \"1s\"\nexpect_staus = 200\n"
    )
);
case!(
    unknown_key_in_project,
    "[project]\nname = \"demo\"\nmax_paralel = 4\n"
);
case!(
    wrong_type_port,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\nport = \"8080\"\n")
);
case!(
    port_out_of_range,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\nport = 70000\n")
);
case!(
    wrong_type_checks,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nchecks = \"pytest -q\"\n"
    )
);
case!(
    bad_duration,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nhealth = { period = \"10 seconds\" }\n"
    )
);
case!(
    duration_as_number,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ntimeout = 600\n")
);
case!(
    zero_duration,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nhealth = { period = \"0s\" }\n"
    )
);
case!(
    bad_service_name,
    &with_head("[services.Api_Server]\npath = \"api\"\nrun = \"x\"\nport = 8080\n")
);
case!(
    bad_service_name_punctuation,
    "[project]\nname = \"demo\"\n\n[services.\"api!\"]\npath = \"api\"\nrun = \"x\"\nport = 8080\n"
);
case!(
    instances_too_large,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ninstances = 99999999999\n"
    )
);
case!(
    instances_beyond_64_bits,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ninstances = 99999999999999999999999\n"
    )
);
case!(
    bad_project_name,
    "[project]\nname = \"../../../x\"\n\n[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n"
);
case!(
    bad_project_name_capitals,
    "[project]\nname = \"My Shop\"\n\n[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n"
);
case!(
    bad_environment_name,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.Prod]\ntarget = \"local\"\n"
    )
);
case!(
    unknown_strategy,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nstrategy = \"bluegreen\"\n"
    )
);
case!(
    unknown_target,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.prod]\ntarget = \"k8s\"\n"
    )
);
case!(
    duplicate_ports,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.web]\npath = \"web\"\nrun = \"y\"\nport = 8080\n"
    )
);
case!(
    duplicate_ports_in_one_environment,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.web]\npath = \"web\"\nrun = \"y\"\nport = 8081\n[environments.production]\n[environments.production.services.web]\nport = 8080\n"
    )
);
case!(
    different_listen_addresses_may_share_a_port,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.web]\npath = \"web\"\nrun = \"y\"\nport = 8080\nlisten = \"127.0.0.2\"\n"
    )
);
case!(
    wildcard_listen_overlaps,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nlisten = \"0.0.0.0\"\n[services.web]\npath = \"web\"\nrun = \"y\"\nport = 8080\nlisten = \"127.0.0.2\"\n"
    )
);
case!(
    unknown_depends_on,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ndepends_on = [\"wroker\"]\n[services.worker]\npath = \"worker\"\nrun = \"y\"\nport = 8081\n"
    )
);
case!(
    self_dependency,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ndepends_on = [\"api\"]\n"
    )
);
case!(
    dependency_cycle,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ndepends_on = [\"worker\"]\n[services.worker]\npath = \"worker\"\nrun = \"y\"\nport = 8081\ndepends_on = [\"web\"]\n[services.web]\npath = \"web\"\nrun = \"z\"\nport = 8082\ndepends_on = [\"api\"]\n"
    )
);
case!(
    empty_run,
    &with_head("[services.api]\npath = \"api\"\nrun = \"  \"\nport = 8080\n")
);
case!(
    empty_check_command,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nchecks = [\"ruff check .\", \"\"]\npre_deploy = [\"\"]\n"
    )
);
case!(
    missing_run,
    &with_head("[services.api]\npath = \"api\"\nport = 8080\n[environments.staging]\n")
);
case!(
    missing_port,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\n")
);
case!(
    docker_needs_port,
    &with_head("[defaults]\ntarget = \"docker\"\n[services.api]\npath = \"api\"\n")
);
case!(
    missing_path,
    &with_head("[services.api]\nrun = \"x\"\nport = 8080\n")
);
case!(
    path_missing,
    &with_head("[services.api]\npath = \"apps/api\"\nrun = \"x\"\nport = 8080\n")
);
case!(
    path_absolute,
    &with_head("[services.api]\npath = \"/srv/api\"\nrun = \"x\"\nport = 8080\n")
);
case!(
    path_escapes,
    &with_head("[services.api]\npath = \"../api\"\nrun = \"x\"\nport = 8080\n")
);
case!(
    path_is_a_file,
    &with_head("[services.api]\npath = \"README.md\"\nrun = \"x\"\nport = 8080\n")
);
case!(
    invalid_watch_glob,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nwatch = [\"shared/[ab\"]\n"
    )
);
case!(
    canary_steps_empty,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nstrategy = \"canary\"\ncanary = { steps = [] }\n"
    )
);
case!(
    canary_without_steps,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nstrategy = \"canary\"\n")
);
case!(
    canary_weight_out_of_range,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.canary]\nsteps = [{ weight = 0 }, { weight = 150 }]\n"
    )
);
case!(
    canary_weights_decreasing,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.canary]\nsteps = [{ weight = 50, pause = \"5m\" }, { weight = 25 }]\n"
    )
);
case!(
    canary_bad_pause,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.canary]\nsteps = [{ weight = 50, pause = \"later\" }]\n"
    )
);
case!(
    max_error_rate_out_of_range,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.canary]\nsteps = [{ weight = 100 }]\nmax_error_rate = 5\n"
    )
);
case!(
    ready_timeout_zero,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.health]\nready_timeout = \"0s\"\n"
    )
);
case!(
    threshold_zero,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.health]\nfailure_threshold = 0\n"
    )
);
case!(
    expect_status_out_of_range,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.health]\nexpect_status = 2000\n"
    )
);
case!(
    health_path_without_slash,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.health]\npath = \"health\"\n"
    )
);
case!(
    unknown_default_env,
    "[project]\nname = \"demo\"\ndefault_env = \"stagng\"\n[environments.staging]\n"
);
case!(
    notify_bad_url,
    &with_head("[[notify]]\nurl = \"hooks.example.com/x\"\n")
);
case!(
    notify_bad_format,
    &with_head("[[notify]]\nurl = \"https://hooks.example.com/x\"\nformat = \"xml\"\n")
);
case!(
    notify_bad_on,
    &with_head(
        "[[notify]]\nurl = \"https://hooks.example.com/x\"\non = [\"deploy.succeded\", \"deployed\"]\n"
    )
);
case!(
    invalid_listen,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nlisten = \"localhost\"\n"
    )
);
case!(
    listen_with_port,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nlisten = \"0.0.0.0:80\"\n"
    )
);
case!(
    env_number,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nenv = { WORKERS = 4, DEBUG = true }\n"
    )
);
case!(
    env_bad_names,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nenv = { \"LOG-LEVEL\" = \"info\", KEY = { secret = \"my key\" } }\n"
    )
);
case!(
    env_secret_typo,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nenv = { KEY = { secrt = \"KEY\" } }\n"
    )
);
case!(
    unknown_service_override,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.production.services.apii]\ninstances = 2\n"
    )
);
case!(
    path_not_allowed_in_environment,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.production]\npath = \"web\"\n"
    )
);
case!(
    missing_project,
    "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n"
);
case!(
    missing_project_name,
    "[project]\nstate = \"sqlite://.cutover/state.db\"\n"
);
case!(
    bad_state,
    "[project]\nname = \"demo\"\nstate = \"mysql://db\"\n"
);
case!(
    bad_metrics_listen,
    "[project]\nname = \"demo\"\nmetrics_listen = \"9464\"\n"
);
case!(
    metrics_listen_on_a_service_port,
    "[project]\nname = \"demo\"\nmetrics_listen = \"127.0.0.1:8080\"\n\n[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n"
);
case!(
    max_parallel_zero,
    "[project]\nname = \"demo\"\nmax_parallel = 0\n"
);
case!(
    several_errors_in_file_order,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = \"8080\"\nhelth = 1\n[services.web]\npath = \"web\"\nrun = \"\"\nport = 8081\nhealth = { period = \"soon\" }\n"
    )
);
case!(
    build_args_secret,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nbuild_args = { PY = \"3.12\", TOKEN = { secret = \"NPM_TOKEN\" } }\n"
    )
);
case!(
    build_args_not_strings,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nbuild_args = { PY = 3.12, DEBUG = true, LIST = [\"a\"] }\n"
    )
);
case!(
    build_args_bad_name,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[services.api.build_args]\n\"PY-VERSION\" = \"3.12\"\n"
    )
);
case!(
    image_with_tag,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nimage = \"acme/api:1.0\"\n"
    )
);
case!(
    image_registry_only,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nimage = \"localhost:5000\"\n"
    )
);
case!(
    image_with_digest,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nimage = \"acme/api@sha256:0123abcd\"\n"
    )
);
case!(
    image_uppercase,
    &with_head("[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nimage = \"Acme/API\"\n")
);
case!(
    image_bad_characters,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nimage = \"acme/my_-api\"\n"
    )
);
case!(
    container_port_out_of_range,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ncontainer_port = 0\n[environments.preprod]\ncontainer_port = 70000\n"
    )
);
case!(
    container_port_wrong_type,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ncontainer_port = \"8080\"\n"
    )
);
case!(
    autoscale_min_above_max,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nautoscale = { min = 6, max = 2, target_inflight = 10 }\n"
    )
);
case!(
    autoscale_zero,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nautoscale = { min = 0, max = 2, target_inflight = 0 }\n"
    )
);
case!(
    autoscale_missing_keys,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nautoscale = { min = 2 }\n"
    )
);
case!(
    autoscale_unknown_key,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nautoscale = { min = 1, max = 2, target_inflight = 10, target_cpu = 80 }\n"
    )
);
case!(
    dockerfile_absolute,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ndockerfile = \"/srv/Dockerfile\"\n"
    )
);
case!(
    dockerfile_outside_project,
    &with_head(
        "[defaults]\ndockerfile = \"../Dockerfile\"\n[services.api]\npath = \".\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ntarget = \"docker\"\n"
    )
);
case!(
    registry_with_scheme,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ntarget = \"docker\"\nregistry = \"http://127.0.0.1:5000\"\n"
    )
);
case!(
    registry_with_spaces,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\nregistry = \"127.0.0.1: 5000\"\n"
    )
);
case!(
    registry_without_host,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\nregistry = \"acme\"\n"
    )
);
case!(
    registry_on_a_service,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nregistry = \"127.0.0.1:5000\"\n"
    )
);
case!(
    docker_host_bad,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ntarget = \"docker\"\n[environments.preprod.docker]\nhost = \"docker.example.com\"\n"
    )
);
case!(
    docker_host_http,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ntarget = \"docker\"\ndocker = { host = \"http://127.0.0.1:2375\" }\n"
    )
);
case!(
    docker_host_bad_port,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ndocker = { host = \"tcp://127.0.0.1:99999\" }\n"
    )
);
case!(
    docker_host_relative_socket,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ndocker = { host = \"unix://var/run/docker.sock\" }\n"
    )
);
case!(
    docker_unknown_key,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod.docker]\nhots = \"unix:///var/run/docker.sock\"\n"
    )
);
case!(
    swarm_host_bad,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.cluster]\ntarget = \"swarm\"\nregistry = \"10.0.0.1:5000\"\nswarm = { host = \"ssh://manager\" }\n"
    )
);
case!(
    two_services_one_image,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\nimage = \"acme/app\"\n[services.web]\npath = \"web\"\nrun = \"y\"\nport = 8081\nimage = \"acme/app\"\n[environments.preprod]\ntarget = \"docker\"\n"
    )
);
case!(
    default_image_invalid,
    &with_head(
        "[services.api-]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.preprod]\ntarget = \"docker\"\n"
    )
);

#[test]
fn missing_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let err = cutover_config::load(tmp.path()).expect_err("an error");
    assert_eq!(err.line, 0);
    let text = err
        .report()
        .replace(&tmp.path().display().to_string(), "[PROJECT]");
    insta::assert_snapshot!("missing_file", text);
}

#[test]
fn display_is_file_line_column_message() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("cutover.toml");
    let err =
        parse("[project]\nname = \"x\"\nbogus = 1\n", &file, tmp.path()).expect_err("an error");
    assert_eq!(
        err.to_string(),
        format!("{}:3:1: unknown key `bogus` in [project]", file.display())
    );
    assert_eq!((err.line, err.column), (3, 1));
    let shown = err.with_display_path(Path::new("cutover.toml"));
    assert_eq!(
        shown.to_string(),
        "cutover.toml:3:1: unknown key `bogus` in [project]"
    );
}

#[test]
fn related_errors_are_in_file_order() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = "[project]\nname = \"x\"\nbogus = 1\n[services.api]\npath = \"nope\"\nport = \"1\"\n";
    let err = parse(src, Path::new("cutover.toml"), tmp.path()).expect_err("an error");
    let lines: Vec<usize> = err.all().map(|e| e.line).collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
    use miette::Diagnostic;
    assert_eq!(err.related().map(|r| r.count()), Some(lines.len() - 1));
    assert!(err.help().is_some());
}
case!(
    swarm_without_registry,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\n[environments.cluster]\ntarget = \"swarm\"\n"
    )
);
case!(
    swarm_limits_bad,
    &with_head(
        "[services.api]\npath = \"api\"\nrun = \"x\"\nport = 8080\ncpus = 0\nmemory = \"lots\"\nconstraints = [\"node.role\"]\n[environments.cluster]\ntarget = \"swarm\"\nregistry = \"10.0.0.1:5000\"\n"
    )
);
