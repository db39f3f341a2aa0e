//! file_sd files through `load`: JSON and YAML groups, their labels and profiles, every
//! problem with its file and position, duplicates across sources, hostile files.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{Config, ConfigError, DEFAULT_FILE_SD_REFRESH, load};

/// A folder with `tlsward.toml` (`config`) and the given files beside it.
fn setup(config: &str, files: &[(&str, &[u8])]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = tmp.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let cfg = tmp.path().join("tlsward.toml");
    std::fs::write(&cfg, config).unwrap();
    (tmp, cfg)
}

fn problems(cfg: &Path) -> Vec<String> {
    match load(cfg) {
        Ok(_) => panic!("{} loaded", cfg.display()),
        Err(ConfigError { problems }) => problems,
    }
}

/// A target's name, profile and labels.
type Listed = (String, String, Vec<(String, String)>);

/// (name, profile, labels) of every target, in order.
fn listed(config: &Config) -> Vec<Listed> {
    config
        .targets
        .iter()
        .map(|t| (t.name.to_string(), t.profile.to_string(), t.labels.clone()))
        .collect()
}

fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Groups from a JSON and a YAML file become targets probed with `[defaults]`, carrying
/// their group's labels; the label `profile` chooses the profile and is not a label; the
/// files are watched as the patterns say, at the default refresh.
#[test]
fn json_and_yaml_groups_become_targets_with_their_labels() {
    let json = br#"[
  {"targets": ["a.example.org", "b.example.org:8443"], "labels": {"env": "prod", "team": "web"}},
  {"targets": ["mail.example.org:25"], "labels": {"profile": "smtp-starttls"}},
  {"targets": []}
]"#;
    let yaml = b"- targets: ['c.example.org']\n  labels:\n    env: staging\n";
    let (tmp, cfg) = setup(
        "file_sd = [\"sd/*.json\", \"sd/*.yml\"]\n[defaults]\ninterval = \"5m\"\n",
        &[("sd/web.json", json), ("sd/more.yml", yaml)],
    );
    let config = load(&cfg).unwrap();
    let https = "https".to_owned();
    assert_eq!(
        listed(&config),
        [
            (
                "a.example.org:443".to_owned(),
                https.clone(),
                owned(&[("env", "prod"), ("team", "web")])
            ),
            (
                "b.example.org:8443".to_owned(),
                https.clone(),
                owned(&[("env", "prod"), ("team", "web")])
            ),
            (
                "mail.example.org:25".to_owned(),
                "smtp-starttls".to_owned(),
                vec![]
            ),
            (
                "c.example.org:443".to_owned(),
                https,
                owned(&[("env", "staging")])
            ),
        ]
    );
    assert!(
        config
            .targets
            .iter()
            .all(|t| t.interval == Duration::from_secs(300))
    );
    assert_eq!(
        config.file_sd.patterns,
        [tmp.path().join("sd/*.json"), tmp.path().join("sd/*.yml")]
    );
    assert_eq!(config.file_sd.refresh, DEFAULT_FILE_SD_REFRESH);
    assert_eq!(config.file_sd.stamp, config.file_sd.stamp_now());
}

/// `file_sd_refresh` sets how often `serve` looks; a bad one is reported at its line.
#[test]
fn file_sd_refresh_is_a_duration() {
    let (_tmp, cfg) = setup(
        "file_sd = [\"a.json\"]\nfile_sd_refresh = \"1s\"\n",
        &[("a.json", b"[]")],
    );
    assert_eq!(load(&cfg).unwrap().file_sd.refresh, Duration::from_secs(1));
    std::fs::write(&cfg, "file_sd = [\"a.json\"]\nfile_sd_refresh = \"soon\"\n").unwrap();
    let p = problems(&cfg);
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with(&format!("{}:2: file_sd_refresh: \"soon\": ", cfg.display())),
        "{p:?}"
    );
}

/// A file that does not parse is named with the line and column of the mistake, in both
/// formats, and a misspelt key is a mistake, not something ignored.
#[test]
fn parse_errors_give_the_file_line_and_column() {
    let (tmp, cfg) = setup(
        "file_sd = [\"*.json\", \"*.yaml\"]\n",
        &[
            (
                "a.json",
                b"[\n  {\"targets\": [\"a.example.org\"]\n  {\"targets\": []}\n]\n",
            ),
            (
                "b.json",
                b"[{\"targets\": [\"a.example.org\"], \"label\": {}}]",
            ),
            ("c.yaml", b"- targets: [a.example.org\n- labels: {}\n"),
            ("d.yaml", b"- targets: 7\n"),
        ],
    );
    let f = |name: &str| tmp.path().join(name).display().to_string();
    assert_eq!(
        problems(&cfg),
        [
            format!("{}:3:3: expected `,` or `}}`", f("a.json")),
            format!(
                "{}:1:39: unknown field `label`, expected `targets` or `labels`",
                f("b.json")
            ),
            format!(
                "{}:2:9: did not find expected ',' or ']', while parsing a flow sequence at line 1 column 12",
                f("c.yaml")
            ),
            format!(
                "{}:1:12: .[0].targets: invalid type: integer `7`, expected a sequence",
                f("d.yaml")
            ),
        ]
    );
}

/// Labels are checked like a `[[target]]`'s, values too since another program wrote them;
/// a group with a bad label or an unknown profile is left out, every problem named by file
/// and group, while the good group beside it is kept.
#[test]
fn bad_labels_and_profiles_are_named_by_group() {
    let long = "x".repeat(1025);
    let json = format!(
        r#"[
  {{"targets": ["ok.example.org"], "labels": {{"env": "prod"}}}},
  {{"targets": ["a.example.org"], "labels": {{"1st": "x", "job": "y", "__meta_x": "z"}}}},
  {{"targets": ["b.example.org"], "labels": {{"env": "a\u001b[31mb", "rack": "r\u202ee"}}}},
  {{"targets": ["c.example.org"], "labels": {{"env": "{long}"}}}},
  {{"targets": ["d.example.org"], "labels": {{"profile": "htps"}}}},
  {{"targets": ["bad host name", "e.example.org:0"]}}
]"#
    );
    let (tmp, cfg) = setup("file_sd = [\"t.json\"]\n", &[("t.json", json.as_bytes())]);
    let f = tmp.path().join("t.json").display().to_string();
    let p = problems(&cfg);
    assert_eq!(
        p,
        [
            format!("{f}: group[1].labels: \"1st\" is not a valid Prometheus label name"),
            format!("{f}: group[1].labels: \"__meta_x\" is reserved by tlsward"),
            format!("{f}: group[1].labels: \"job\" is reserved by tlsward"),
            format!(
                "{f}: group[2].labels: env: \"a\\u{{1b}}[31mb\" has a control or bidi character"
            ),
            format!(
                "{f}: group[2].labels: rack: \"r\\u{{202e}}e\" has a control or bidi character"
            ),
            format!("{f}: group[3].labels: env: the value is 1025 bytes, longer than 1024"),
            format!("{f}: group[4].labels: unknown profile \"htps\" (did you mean \"https\"?)"),
            format!(
                "{f}: group[5].targets[0]: {}",
                "bad host name".parse::<crate::probe::Target>().unwrap_err()
            ),
            format!(
                "{f}: group[5].targets[1]: {}",
                "e.example.org:0"
                    .parse::<crate::probe::Target>()
                    .unwrap_err()
            ),
        ]
    );
    // No problem carries a raw control or bidi character.
    assert!(
        p.iter().all(|l| !l.chars().any(crate::escape::is_unsafe)),
        "{p:?}"
    );
}

/// The duplicate check is the one every source goes through: a file_sd target repeating a
/// `[[target]]`, a targets file line or another file_sd group with the same profile is
/// named with where it was first; the same address with another profile is its own target.
#[test]
fn duplicates_across_sources_say_where_the_first_is() {
    let (tmp, cfg) = setup(
        "targets_files = [\"list.txt\"]\nfile_sd = [\"sd/*.json\"]\n\n\
         [[target]]\naddress = \"www.example.org\"\n",
        &[
            ("list.txt", b"other.example.org\n"),
            (
                "sd/a.json",
                br#"[{"targets": ["x.example.org"]}, {"targets": ["www.example.org:443", "y.example.org"]}]"#,
            ),
            (
                "sd/b.json",
                br#"[{"targets": ["other.example.org", "y.example.org", "www.example.org"], "labels": {"profile": "tls"}}, {"targets": ["x.example.org"]}]"#,
            ),
        ],
    );
    let (a, b) = (
        tmp.path().join("sd/a.json").display().to_string(),
        tmp.path().join("sd/b.json").display().to_string(),
    );
    assert_eq!(
        problems(&cfg),
        [
            format!(
                "{a}: group[1].targets[0]: www.example.org:443 with profile \"https\" is already target[0]"
            ),
            format!(
                "{b}: group[1].targets[0]: x.example.org:443 with profile \"https\" is already in {a} group[0]"
            ),
        ]
    );
    // With those two gone, the other profile's targets are targets of their own.
    std::fs::write(
        tmp.path().join("sd/a.json"),
        br#"[{"targets": ["x.example.org", "y.example.org"]}]"#,
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("sd/b.json"),
        br#"[{"targets": ["other.example.org", "y.example.org", "www.example.org"], "labels": {"profile": "tls"}}]"#,
    )
    .unwrap();
    let config = load(&cfg).unwrap();
    let names: Vec<(String, String)> = listed(&config)
        .into_iter()
        .map(|(n, p, _)| (n, p))
        .collect();
    let pair = |n: &str, p: &str| (n.to_owned(), p.to_owned());
    assert_eq!(
        names,
        [
            pair("www.example.org:443", "https"),
            pair("other.example.org:443", "https"),
            pair("x.example.org:443", "https"),
            pair("y.example.org:443", "https"),
            pair("other.example.org:443", "tls"),
            pair("y.example.org:443", "tls"),
            pair("www.example.org:443", "tls"),
        ]
    );
    // And a targets file line repeating a file_sd target... cannot: targets files come
    // first, so it is the file_sd target that is named.
    std::fs::write(tmp.path().join("list.txt"), "x.example.org\n").unwrap();
    assert_eq!(
        problems(&cfg),
        [format!(
            "{a}: group[0].targets[0]: x.example.org:443 with profile \"https\" is already in a targets file"
        )]
    );
}

/// Hostile files give a clear error each, never a panic nor a long parse: deep nesting (YAML
/// refused before libyaml's quadratic time), bad UTF-8, a YAML
/// alias bomb, an empty file (a writer caught mid-rewrite), a file over the size cap, an
/// unknown extension, a pattern matching nothing; and a file of many bad targets lists
/// the first hundred problems and counts the rest.
#[test]
fn hostile_files_are_refused_clearly() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_map = format!(
        "[{{\"targets\": [], \"labels\": {}}}]",
        "{\"a\": ".repeat(10_000)
    );
    // Anchors nest, but the types do not: a group holds a flat list of strings, so the
    // first alias of a list is refused where it stands, before anything is expanded.
    let mut bomb = String::from("- targets: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..20u8 {
        let (prev, cur) = ((b'a' + i - 1) as char, (b'a' + i) as char);
        bomb.push_str(&format!(
            "- targets: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    let deep_yaml = format!(
        "- targets: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let many: String = format!(
        "[{{\"targets\": [{}]}}]",
        vec!["\"bad name\""; 150].join(", ")
    );
    let (tmp, cfg) = setup(
        "file_sd = [\"h/*\", \"nothing/*.json\"]\n",
        &[
            ("h/a-deep.json", deep.as_bytes()),
            ("h/b-deep-map.json", deep_map.as_bytes()),
            ("h/c-binary.json", b"[{\"targets\": [\"\xff\xfe\"]}]"),
            ("h/d-bomb.yaml", bomb.as_bytes()),
            ("h/e-empty.yml", b"\n"),
            ("h/e-deep.yml", deep_yaml.as_bytes()),
            ("h/f-targets.txt", b"a.example.org\n"),
            ("h/g-many.json", many.as_bytes()),
        ],
    );
    let huge = tmp.path().join("h/z-huge.json");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(crate::files::MAX_TARGETS + 1)
        .unwrap();
    let f = |name: &str| tmp.path().join("h").join(name).display().to_string();
    let c = cfg.display().to_string();
    let p = problems(&cfg);
    let starts = [
        format!("{c}:1: file_sd: {}: is not UTF-8 text", f("c-binary.json")),
        format!(
            "{c}:1: file_sd: {}: unknown format: name the file .json, .yml or .yaml",
            f("f-targets.txt")
        ),
        format!(
            "{c}:1: file_sd: {}: is larger than 256 MiB",
            f("z-huge.json")
        ),
        format!(
            "{c}:1: file_sd: no file matches {}",
            tmp.path().join("nothing/*.json").display()
        ),
        format!(
            "{}:1:3: invalid type: sequence, expected a string",
            f("a-deep.json")
        ),
        format!(
            "{}:1:33: invalid type: map, expected a string",
            f("b-deep-map.json")
        ),
        format!(
            "{}:1:12: .[1].targets[0]: invalid type: sequence, expected a string",
            f("d-bomb.yaml")
        ),
        format!("{}:1:76: nested deeper than 64 levels", f("e-deep.yml")),
        format!(
            "{}: is empty (write [] for a file without targets)",
            f("e-empty.yml")
        ),
    ];
    for (line, start) in p.iter().zip(&starts) {
        assert!(
            line.starts_with(start.as_str()),
            "{line:?} should start with {start:?}\nall: {p:#?}"
        );
    }
    let many: Vec<&String> = p[starts.len()..].iter().collect();
    assert_eq!(many.len(), 101, "{p:#?}");
    assert!(many[99].starts_with(&format!("{}: group[0].targets[99]: ", f("g-many.json"))));
    assert_eq!(
        many[100],
        &format!("{}: 50 more problems not listed", f("g-many.json"))
    );
}

/// The YAML depth scan counts flow brackets, not those in quoted scalars or comments, so a
/// label value full of brackets is read, while real nesting past the limit is refused.
#[test]
fn yaml_depth_skips_quoted_brackets() {
    let many = "[".repeat(200);
    let text = format!(
        "# {many}\n- targets: ['a.example.org']\n  labels: {{env: \"{many}\", rack: '{many}'}}\n"
    );
    assert_eq!(super::too_deep(&text), None);
    let groups = super::parse(&text, super::Format::Yaml).unwrap();
    assert_eq!(groups[0].labels["env"], many);
    let deep = format!("- targets: {}\n", "[".repeat(65));
    assert_eq!(super::too_deep(&deep), Some((1, 76)));
    assert_eq!(
        super::too_deep(&format!("- targets: {}\n", "[".repeat(64))),
        None
    );
}
