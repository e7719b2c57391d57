//! What users get from a bridge and what they cannot reach: a child environment with nothing of
//! the bridge's own, a private directory per user (isolation `user`), at most so many sessions
//! and tool calls per second per user (429 with `Retry-After` and a JSON-RPC error).

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const ECHO: &str = env!("CARGO_BIN_EXE_mcpgw-echo-child");

#[tokio::test]
async fn children_get_only_the_environment_their_configuration_names() {
    let b = Bridge::start_in(
        &["--env-pass", "PASSED_ON"],
        &[("NAMED", "v"), ("STORE", "{user_dir}/memory.json")],
        &[
            ("GITHUB_CLIENT_SECRET", "gateway-secret"),
            ("PASSED_ON", "p"),
            ("HOME", "/root"),
        ],
        &[ECHO],
    );
    let mut c = b.client().await;
    let s = c.initialize(VERSION).await;
    let (env, cwd) = child_env(&mut c, &s).await;
    assert!(!env.contains_key("GITHUB_CLIENT_SECRET"), "{env:?}");
    assert!(!env.contains_key("RUST_LOG"), "{env:?}");
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["HOME", "NAMED", "PASSED_ON", "PATH", "STORE"]);
    assert_eq!(env["NAMED"], "v");
    assert_eq!(env["PASSED_ON"], "p");
    assert_eq!(env["HOME"], cwd.as_str());
    assert_eq!(env["STORE"], format!("{cwd}/memory.json").as_str());
    assert!(
        cwd.starts_with(&b.state.join("users").display().to_string()),
        "{cwd}"
    );
}

#[tokio::test]
async fn each_user_runs_in_a_private_directory_that_outlives_their_children() {
    let b = Bridge::echo(&[], &[]);
    let mut alice = b.client().await;
    alice.act_as("oidc:alice", "c1");
    let a1 = alice.initialize(VERSION).await;
    let a2 = alice.initialize(VERSION).await;
    let mut bob = b.client().await;
    bob.act_as("../oidc:bob", "c1");
    let b1 = bob.initialize(VERSION).await;
    let (_, alice_dir) = child_env(&mut alice, &a1).await;
    let (_, alice_again) = child_env(&mut alice, &a2).await;
    let (_, bob_dir) = child_env(&mut bob, &b1).await;
    assert_eq!(
        alice_dir, alice_again,
        "a user's sessions share the user's directory"
    );
    assert_ne!(alice_dir, bob_dir);
    for dir in [&alice_dir, &bob_dir] {
        let p = std::path::Path::new(dir);
        assert_eq!(p.parent(), Some(b.state.join("users").as_path()));
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        assert!(
            name.len() == 64 && name.bytes().all(|c| c.is_ascii_hexdigit()),
            "{name}"
        );
        let mode =
            std::fs::metadata(p).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.map(|m| m & 0o777).ok(), Some(0o700));
    }
    std::fs::write(std::path::Path::new(&alice_dir).join("state"), "alice's").unwrap();
    for s in [&a1, &a2] {
        assert_eq!(
            alice.call("DELETE", &session_headers(s), None).await.status,
            200
        );
    }
    let a3 = alice.initialize(VERSION).await;
    let (_, dir) = child_env(&mut alice, &a3).await;
    assert_eq!(dir, alice_dir);
    assert_eq!(
        std::fs::read_to_string(std::path::Path::new(&dir).join("state")).unwrap(),
        "alice's"
    );
}

#[tokio::test]
async fn stateless_requests_go_to_the_users_own_child() {
    let b = Bridge::echo(&[], &[]);
    let ask = request_env_stateless;
    let mut alice = b.client().await;
    alice.act_as("oidc:alice", "c1");
    let mut bob = b.client().await;
    bob.act_as("oidc:bob", "c1");
    let (alice_pid, alice_dir) = ask(&mut alice).await;
    let (bob_pid, bob_dir) = ask(&mut bob).await;
    assert_ne!(alice_pid, bob_pid, "one child per user");
    assert_ne!(alice_dir, bob_dir);
    assert_eq!(
        ask(&mut alice).await,
        (alice_pid, alice_dir.clone()),
        "the same child again"
    );
    let s = alice.initialize(VERSION).await;
    let (_, session_dir) = child_env(&mut alice, &s).await;
    assert_eq!(
        session_dir, alice_dir,
        "sessions and stateless calls share the user's directory"
    );
}

#[tokio::test]
async fn an_idle_users_stateless_child_is_stopped_and_their_directory_stays() {
    let b = Bridge::echo(&["--idle-timeout", "300ms"], &[]);
    let mut alice = b.client().await;
    alice.act_as("oidc:alice", "c1");
    let (pid, dir) = request_env_stateless(&mut alice).await;
    assert!(
        eventually(Duration::from_secs(10), || !is_alive(pid as u32)).await,
        "the idle child was not stopped"
    );
    let (again, same) = request_env_stateless(&mut alice).await;
    assert_ne!(again, pid);
    assert_eq!(same, dir);
}

/// The pid and working directory of the child serving `c`'s 2026-07-28 requests.
async fn request_env_stateless(c: &mut Client) -> (u64, String) {
    let pid = c
        .call(
            "POST",
            &modern_headers("debug/pid", None),
            Some(&modern_request(1, "debug/pid", json!({}))),
        )
        .await
        .json();
    let env = c
        .call(
            "POST",
            &modern_headers("debug/env", None),
            Some(&modern_request(2, "debug/env", json!({}))),
        )
        .await
        .json();
    (
        pid["result"]["pid"].as_u64().unwrap_or(0),
        env["result"]["cwd"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test]
async fn a_user_holds_at_most_so_many_sessions() {
    let b = Bridge::echo(&["--max-sessions-per-user", "2", "--retry-after", "3"], &[]);
    let mut alice = b.client().await;
    alice.act_as("oidc:alice", "c1");
    let first = alice.initialize(VERSION).await;
    alice.initialize(VERSION).await;
    let refused = alice
        .call("POST", &base_headers(), Some(&initialize_msg(VERSION)))
        .await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("3"));
    assert_eq!(refused.json()["error"]["code"], -32029);
    assert_eq!(refused.json()["id"], 0);
    let mut bob = b.client().await;
    bob.act_as("oidc:bob", "c1");
    bob.initialize(VERSION).await;
    assert_eq!(
        alice
            .call("DELETE", &session_headers(&first), None)
            .await
            .status,
        200
    );
    alice.initialize(VERSION).await;
}

#[tokio::test]
async fn a_user_makes_at_most_so_many_tool_calls_per_second() {
    let b = Bridge::echo(&["--tool-calls-per-second", "3"], &[]);
    let mut alice = b.client().await;
    alice.act_as("oidc:alice", "c1");
    let s = alice.initialize(VERSION).await;
    let call = |id| request(id, "tools/call", json!({"name": "echo", "arguments": {}}));
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for id in 1..=5 {
            v.push(alice.post(&s, &call(id)).await.status);
        }
        v
    };
    assert_eq!(&statuses[..3], [200, 200, 200]);
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    let refused = alice.post(&s, &call(9)).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.json()["error"]["code"], -32029);
    assert_eq!(refused.json()["id"], 9);
    // Other methods, and other users, are not counted against alice.
    assert_eq!(
        alice
            .post(&s, &request(10, "tools/list", json!({})))
            .await
            .status,
        200
    );
    let mut bob = b.client().await;
    bob.act_as("oidc:bob", "c1");
    let bs = bob.initialize(VERSION).await;
    assert_eq!(bob.post(&bs, &call(1)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(alice.post(&s, &call(11)).await.status, 200);
}

#[test]
fn unknown_placeholders_and_user_dirs_without_user_isolation_are_refused_at_startup() {
    for (flags, says) in [
        (vec!["--env", "X={home}/x"], "unknown placeholder `{home}`"),
        (
            vec!["--isolation", "session", "--env", "X={user_dir}"],
            "needs --isolation user",
        ),
        (vec!["--env", "1X=y"], "environment variable names"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mcpgw-bridge"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(std::env::temp_dir().join(format!("mcpgw-bridge-refused-{}", std::process::id())))
            .args(&flags)
            .args(["--", ECHO])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flags:?}");
        assert!(err.contains(says), "{flags:?}: {err}");
    }
}
