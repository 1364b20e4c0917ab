//! The `ate` binary against a local data directory, as scripts use it:
//! outputs, JSON, exit codes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn ate(arguments: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ate"))
        .args(arguments)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ate runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        input.write_all(bytes).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn put_get_ls_del_stat_tail_verify_and_proof_on_a_local_chain() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}/demo", dir.path().display());

    let put = ate(&["put", &target, "hello", "world"], None);
    assert!(put.status.success(), "{put:?}");
    assert_eq!(text(&put), "0", "prints the committed sequence");
    let put = ate(&["put", &target, "piped"], Some(b"from stdin"));
    assert_eq!(text(&put), "1");

    let get = ate(&["get", &target, "hello"], None);
    assert!(get.status.success());
    assert_eq!(text(&get), "world");
    assert_eq!(text(&ate(&["get", &target, "piped"], None)), "from stdin");
    let json = ate(&["--json", "get", &target, "hello"], None);
    assert_eq!(text(&json), r#"{"key":"hello","value":"world"}"#);

    let missing = ate(&["get", &target, "nope"], None);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("key 'nope' not found"));

    assert_eq!(text(&ate(&["ls", &target], None)), "hello\npiped");
    assert_eq!(text(&ate(&["del", &target, "piped"], None)), "2");
    assert_eq!(ate(&["del", &target, "piped"], None).status.code(), Some(1));
    assert_eq!(text(&ate(&["--json", "ls", &target], None)), r#"["hello"]"#);

    let stat = text(&ate(&["--json", "stat", &target], None));
    assert!(stat.contains(r#""events":3"#) && stat.contains(r#""objects":1"#), "{stat}");

    let tail = text(&ate(&["tail", &target, "--from", "1"], None));
    assert_eq!(tail.lines().count(), 2, "{tail}");
    assert!(tail.lines().next().unwrap().starts_with("1 put "));
    assert!(tail.lines().nth(1).unwrap().starts_with("2 del "));

    let verify = ate(&["verify", &target], None);
    assert!(verify.status.success(), "{verify:?}");
    assert!(text(&verify).starts_with("ok: 3 events"));
    let proof = text(&ate(&["--json", "proof", &target, "1"], None));
    assert!(proof.contains(r#""tree_size":3"#), "{proof}");
}

#[test]
fn verify_names_the_bad_sequence_with_exit_code_one() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}/audit", dir.path().display());
    for index in 0..5 {
        assert!(ate(&["put", &target, &format!("k{index}"), "v"], None).status.success());
    }
    // Damage the third record's payload in place (its checksum no longer matches).
    let chains = dir.path().join("chains");
    let chain_dir = std::fs::read_dir(&chains).unwrap().next().unwrap().unwrap().path();
    let segment = chain_dir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    let mut offset = 128;
    for _ in 0..2 {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        offset += (16 + len).div_ceil(16) * 16;
    }
    let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    bytes[offset + 16 + len - 1] ^= 1;
    std::fs::write(&segment, &bytes).unwrap();
    let verify = ate(&["--json", "verify", &target], None);
    // Opening already refuses the damaged chain (recovery reports it), naming the sequence.
    assert_ne!(verify.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(stderr.contains("sequence Some(2)") || text(&verify).contains(r#""sequence":2"#), "{verify:?}");
}

#[test]
fn keys_tokens_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("issuer.key");
    let keygen = ate(&["keygen", key.to_str().unwrap()], None);
    assert!(keygen.status.success());
    assert_eq!(text(&keygen).len(), 64, "prints the 32-byte key id in hex");
    assert!(ate(&["keygen", key.to_str().unwrap()], None).status.code() == Some(3), "never overwrites a key");
    let token = ate(
        &["token", "create", "--issuer-key", key.to_str().unwrap(), "--subject", "alice", "--chain", "orders"],
        None,
    );
    assert!(token.status.success(), "{token:?}");
    assert!(text(&token).starts_with("ate-token-v1."));

    let remote = ate(&["get", "tcp://127.0.0.1:5000/demo", "k"], None);
    assert_eq!(remote.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&remote.stderr).contains("--token-file"), "{remote:?}");
    assert_eq!(ate(&["get", "no-slash", "k"], None).status.code(), Some(2));
    assert_eq!(ate(&["frobnicate"], None).status.code(), Some(2));
}

fn refused(output: &Output, containing: &str) {
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains(containing), "{error:?} lacks {containing:?}");
}

#[test]
fn worm_retention_policy_holds_and_refusals_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}/archive", dir.path().display());
    let ok = |arguments: &[&str]| {
        let output = ate(arguments, None);
        assert!(output.status.success(), "{arguments:?}: {output:?}");
        output
    };

    ok(&["retention", "policy", &target, "--mode", "compliance", "--default-retention", "30d"]);
    let stat = ok(&["stat", &target]);
    assert!(text(&stat).contains("retention    compliance, default 30.00 days"), "{}", text(&stat));
    ok(&["put", &target, "report", "q3 numbers"]);

    // Deleting early and shortening are refused with the date, exit code 4.
    refused(&ate(&["del", &target, "report"], None), "protected by compliance-mode retention until 20");
    refused(&ate(&["retention", "extend", &target, "report", "--until", "2001-01-01"], None), "may only be extended");
    ok(&["retention", "extend", &target, "report", "--until", "2099-06-30T12:00:00Z"]);
    refused(&ate(&["retention", "policy", &target, "--mode", "governance"], None), "may only be tightened");

    // Legal holds, shown with the retention of the key.
    ok(&["hold", "set", &target, "report"]);
    let show = ok(&["retention", "show", &target, "report"]);
    let shown = text(&show);
    assert!(shown.contains("retain until  2099-06-30T12:00:00Z") && shown.contains("legal hold    yes"), "{shown}");
    let json = ok(&["--json", "retention", "show", &target, "report"]);
    assert!(text(&json).contains("\"legal_hold\":true"), "{}", text(&json));
    ok(&["hold", "clear", &target, "report"]);
    assert_eq!(ate(&["hold", "set", &target, "missing"], None).status.code(), Some(1), "absent keys are not found");

    // Without a policy, an explicit date still binds.
    let loose = format!("{}/loose", dir.path().display());
    ok(&["put", &loose, "contract", "signed", "--retain-until", "2099-01-01"]);
    refused(&ate(&["del", &loose, "contract"], None), "until 2099-01-01T00:00:00Z");
    assert_eq!(ate(&["put", &loose, "x", "y", "--retain-until", "next tuesday"], None).status.code(), Some(2));
    ok(&["verify", &target]);
    ok(&["verify", &loose]);
}

#[test]
fn export_and_verify_bundle_offline_and_a_changed_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let target = format!("{}/ledger", dir.path().display());
    for index in 0..5 {
        assert!(ate(&["put", &target, &format!("entry-{index}"), "value"], None).status.success());
    }
    let key = dir.path().join("auditor.key");
    let keygen = ate(&["keygen", key.to_str().unwrap()], None);
    let key_id = text(&keygen);
    let bundle = dir.path().join("ledger.bundle");
    let export = ate(
        &[
            "export",
            &target,
            "--from",
            "1",
            "--to",
            "3",
            "--sign-key",
            key.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
        ],
        None,
    );
    assert!(export.status.success(), "{export:?}");
    assert!(text(&export).starts_with("3 events"), "{}", text(&export));

    let compact = ate(&["compact", &target], None);
    assert!(compact.status.success() && text(&compact).contains("sealed segments"), "{compact:?}");
    // One segment, still active: nothing to drop, and the log starts at 0.
    let dropped = ate(&["compact", &target, "--drop-older-than", "0s", "--tombstone-horizon", "0s"], None);
    assert!(
        text(&dropped).contains("0 old segments dropped") && text(&dropped).contains("starts at sequence 0"),
        "{dropped:?}"
    );
    let bad = ate(&["compact", &target, "--drop-older-than", "soon"], None);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert_eq!(ate(&["compact", "tcp://127.0.0.1:1/ledger"], None).status.code(), Some(2), "compaction is local");

    let verified = ate(&["verify-bundle", bundle.to_str().unwrap(), "--trusted-key", &key_id], None);
    assert!(verified.status.success(), "{verified:?}");
    assert!(text(&verified).contains("events 1..=3"), "{}", text(&verified));

    // One byte of a stored value changed: exit 1, naming the event.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(5).position(|window| window == b"value").expect("a stored value");
    bytes[at] ^= 0x20;
    std::fs::write(&bundle, &bytes).unwrap();
    let tampered = ate(&["verify-bundle", bundle.to_str().unwrap()], None);
    assert_eq!(tampered.status.code(), Some(1), "{tampered:?}");
    assert!(String::from_utf8_lossy(&tampered.stderr).contains("event 1"), "{tampered:?}");
}
