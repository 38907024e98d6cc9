//! Bad inputs to `sesame train`: clear errors and no output directory.

use std::path::Path;

use sesame::model::cli::{run_train, TrainArgs};

fn args(data: &Path, target: &str, out: &Path) -> TrainArgs {
    TrainArgs {
        data: data.to_path_buf(),
        target: Some(target.into()),
        bad_value: None,
        id_column: None,
        split_key: None,
        out: out.to_path_buf(),
        created: None,
        no_challenger: true,
        pipeline: None,
        as_of: None,
        labels: None,
        model_version: None,
        chunk_users: sesame::features::chunked::DEFAULT_CHUNK_USERS,
    }
}

fn csv(dir: &Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("d.csv");
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn target_absent_one_class_and_non_binary_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("model");
    let mut body = String::from("x,c,y,same\n");
    for i in 0..50 {
        body.push_str(&format!(
            "{i},{},{},0\n",
            if i % 2 == 0 { "a" } else { "b" },
            if i % 3 == 0 { "bad" } else { "good" }
        ));
    }
    let p = csv(d.path(), &body);
    for (target, want) in [
        ("nope", "'nope' is not in the table"),
        ("same", "only one class"),
        ("y", "--bad-value"),
    ] {
        let e = run_train(args(&p, target, &out)).unwrap_err();
        assert!(format!("{e:#}").contains(want), "{target}: {e:#}");
        assert!(
            !out.exists(),
            "output directory must not exist after an error"
        );
    }
    // no usable feature (the only one is constant) → error, still no directory
    let p = csv(d.path(), "k,y\n1,0\n1,1\n1,0\n1,1\n");
    let e = run_train(args(&p, "y", &out)).unwrap_err();
    assert!(
        format!("{e:#}").contains("no feature passed selection"),
        "{e:#}"
    );
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "{leftovers:?}"); // only d.csv
}

#[test]
fn a_small_valid_file_trains_and_writes_the_directory() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("sub").join("model");
    let mut body = String::from("id,x,c,y\n");
    for i in 0..400 {
        let x = (i * 37 % 100) as f64;
        let bad = (i * 7919 % 100) < (10 + x as usize / 2);
        body.push_str(&format!(
            "{i},{x},{},{}\n",
            if bad && i % 4 == 0 { "p" } else { "q" },
            u8::from(bad)
        ));
    }
    let p = csv(d.path(), &body);
    let mut a = args(&p, "y", &out);
    a.id_column = Some("id".into());
    a.no_challenger = false;
    run_train(a.clone()).unwrap();
    assert!(out.join("scorecard.json").is_file());
    assert!(out.join("challenger.json").is_file());
    let sc = sesame::model::Scorecard::load(&out).unwrap();
    assert!(sc.features().iter().any(|f| f.name == "x"));
    // retraining replaces the directory
    run_train(a).unwrap();
    assert!(out.join("scorecard.json").is_file());
    let names: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}
