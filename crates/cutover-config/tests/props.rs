//! `parse` never panics: not on arbitrary text, not on mutations of a valid file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use proptest::prelude::*;

const VALID: &str = include_str!("data/design-example.toml");

fn dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("skills/pr-review")).expect("mkdir");
        tmp
    })
    .path()
}

fn check(src: &str) {
    if let Err(e) = cutover_config::parse(src, Path::new("cutover.toml"), dir()) {
        // Rendering must not panic either.
        let _ = e.report();
        let _ = e.to_string();
    }
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize, usize),
    Insert(usize, String),
    Replace(usize, usize, String),
    DuplicateLine(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let snippet = prop_oneof![
        any::<String>(),
        Just("\"".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("=".to_string()),
        Just("\n".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("{ secret = 1 }".to_string()),
        Just("[services.x]\n".to_string()),
        Just("port = 8080\n".to_string()),
        Just("\"0s\"".to_string()),
        "[a-z_.]{1,12}",
    ];
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Edit::Delete(a, n)),
        (any::<usize>(), snippet.clone()).prop_map(|(a, s)| Edit::Insert(a, s)),
        (any::<usize>(), 0usize..20, snippet).prop_map(|(a, n, s)| Edit::Replace(a, n, s)),
        any::<usize>().prop_map(Edit::DuplicateLine),
    ]
}

fn apply(src: &str, edits: &[Edit]) -> String {
    let mut s = src.to_string();
    let boundary = |s: &str, i: usize| {
        let mut i = i % (s.len() + 1);
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    for e in edits {
        match e {
            Edit::Delete(at, n) => {
                let a = boundary(&s, *at);
                let b = boundary(&s, a.saturating_add(*n).min(s.len()));
                s.replace_range(a..b.max(a), "");
            }
            Edit::Insert(at, text) => {
                let a = boundary(&s, *at);
                s.insert_str(a, text);
            }
            Edit::Replace(at, n, text) => {
                let a = boundary(&s, *at);
                let b = boundary(&s, a.saturating_add(*n).min(s.len()));
                s.replace_range(a..b.max(a), text);
            }
            Edit::DuplicateLine(at) => {
                let lines: Vec<&str> = s.lines().collect();
                if !lines.is_empty() {
                    let i = at % lines.len();
                    let mut out: Vec<&str> = lines.clone();
                    out.insert(i, lines[i]);
                    s = out.join("\n");
                }
            }
        }
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        check(&s);
    }

    #[test]
    fn toml_like_text_never_panics(s in "([a-z_.\\[\\]=\"{}, 0-9\n-]|services|port|health|canary|steps|env|secret){0,200}") {
        check(&s);
    }

    #[test]
    fn mutations_of_a_valid_file_never_panic(edits in proptest::collection::vec(edit(), 1..6)) {
        check(&apply(VALID, &edits));
    }
}

#[test]
fn the_schema_is_json_with_services() {
    let schema = cutover_config::json_schema();
    let text = serde_json::to_string_pretty(&schema).expect("serializes");
    let back: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(back["properties"]["services"].is_object());
    assert!(back["properties"]["environments"].is_object());
}
