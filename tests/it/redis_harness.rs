//! The real-Redis harness (`support::redis`) does what the shared-store tests rely on: a server of
//! its own per test that answers at once, keeps its password and port across a restart, starts
//! empty, writes nothing to disk; a client that sees what it holds; and a clear failure, never a
//! skip, when `redis-server` cannot be had.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use http::StatusCode;
use redis::aio::MultiplexedConnection;

use crate::support::redis::{MISSING, RedisServer, Stored, effective_uid, find_on_path, locate};
use crate::support::{Binary, assert_no_secret_in, eventually, get};

/// Has characters a URL's userinfo must percent-encode and redis.conf must quote.
const PASSWORD: &str = "s3cr3t p@ss/w:rd\"";

async fn command<T: redis::FromRedisValue>(connection: &mut MultiplexedConnection, command: &redis::Cmd) -> T {
    command.query_async(connection).await.expect("the command succeeds")
}

/// PING over a fresh connection to `url`, whatever fails first (connecting or the PING).
async fn ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut connection).await
}

#[tokio::test]
async fn a_started_server_answers_ping_on_loopback() {
    let server = RedisServer::start();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    let pong: String = command(&mut server.connection().await, &redis::cmd("PING")).await;
    assert_eq!(pong, "PONG");
    let mut connection = server.connection().await;
    let bind: Vec<String> = command(&mut connection, redis::cmd("CONFIG").arg("GET").arg("bind")).await;
    assert_eq!(bind, ["bind", "127.0.0.1"]);
}

#[tokio::test]
async fn the_client_reads_back_what_was_stored() {
    let server = RedisServer::start();
    let mut connection = server.connection().await;
    let () = command(
        &mut connection,
        redis::cmd("SET").arg("token").arg(b"\x00raw").arg("PX").arg(60_000),
    )
    .await;
    let () = command(&mut connection, redis::cmd("SET").arg("plain").arg("forever")).await;
    let _: u64 = command(
        &mut connection,
        redis::cmd("HSET").arg("meta").arg("gen").arg("7").arg("by").arg("a"),
    )
    .await;

    assert_eq!(server.get("token").await.as_deref(), Some(&b"\x00raw"[..]));
    assert_eq!(server.get("absent").await, None);
    let meta = server.hgetall("meta").await;
    assert_eq!(meta.get("gen").map(Vec::as_slice), Some(&b"7"[..]));
    assert_eq!(meta.len(), 2);
    let ttl = server.ttl_ms("token").await;
    assert!((50_000..=60_000).contains(&ttl), "PTTL {ttl}");
    assert_eq!(server.ttl_ms("plain").await, -1);
    assert_eq!(server.ttl_ms("absent").await, -2);
    assert_eq!(server.keys().await, ["meta", "plain", "token"]);

    let dump = server.dump_all().await;
    let meta = dump.iter().find(|s| s.key == b"meta").expect("the hash is dumped");
    assert_eq!(meta.kind, "hash");
    assert_eq!(meta.values.len(), 4, "fields and values: {meta:?}");
    let token = Stored {
        key: b"token".to_vec(),
        kind: "string".into(),
        values: vec![b"\x00raw".to_vec()],
    };
    assert!(dump.contains(&token), "{dump:?}");
    let text = server.dump_text().await;
    assert!(
        text.contains("forever") && text.contains("gen\n7\n"),
        "values in clear show: {text:?}"
    );
    assert_no_secret_in("the dump", &text, &["nothing-like-it".to_owned()]);
}

#[tokio::test]
async fn the_dump_reads_every_collection_type() {
    let server = RedisServer::start();
    let mut connection = server.connection().await;
    let _: u64 = command(&mut connection, redis::cmd("RPUSH").arg("l").arg("in-list")).await;
    let _: u64 = command(&mut connection, redis::cmd("SADD").arg("s").arg("in-set")).await;
    let _: u64 = command(&mut connection, redis::cmd("ZADD").arg("z").arg(1).arg("in-zset")).await;
    let text = server.dump_text().await;
    for value in ["in-list", "in-set", "in-zset"] {
        assert!(text.contains(value), "{value} dumped: {text}");
    }
}

#[tokio::test]
async fn a_password_server_refuses_a_client_without_it_and_takes_the_right_one() {
    let server = RedisServer::start_with_password(PASSWORD);
    let url = server.url();
    assert!(
        url.starts_with("redis://:") && url.ends_with(&format!("@127.0.0.1:{}", server.port())),
        "the URL carries a password"
    );
    assert!(!url.contains(PASSWORD), "the password is percent-encoded in the URL");

    let anonymous = ping(&format!("redis://127.0.0.1:{}", server.port())).await;
    let refused = anonymous.expect_err("no password, no PING");
    assert_eq!(refused.code(), Some("NOAUTH"), "{refused}");
    let wrong = ping(&format!("redis://:wrong@127.0.0.1:{}", server.port())).await;
    assert!(wrong.is_err(), "a wrong password is refused");

    assert_eq!(ping(&url).await.expect("the right password"), "PONG");
    assert!(!server.log().contains("s3cr3t"), "the log never shows the password");
}

#[tokio::test]
async fn kill_then_restart_empty_serves_an_empty_server_on_the_same_port() {
    let mut server = RedisServer::start_with_password(PASSWORD);
    let (port, url) = (server.port(), server.url());
    let mut connection = server.connection().await;
    let () = command(&mut connection, redis::cmd("SET").arg("k").arg("v")).await;
    assert_eq!(server.keys().await, ["k"]);

    server.kill();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens once killed"
    );
    server.restart_empty();
    assert_eq!((server.port(), server.url()), (port, url));
    assert_eq!(server.keys().await, Vec::<String>::new(), "the new server starts empty");
    let anonymous = ping(&format!("redis://127.0.0.1:{port}")).await;
    assert!(anonymous.is_err(), "the password still holds");
    // A connection from before the kill finds the server gone, as a store would.
    let old: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut connection).await;
    assert!(old.is_err(), "the old connection died with the old server");
}

#[tokio::test]
async fn nothing_reaches_the_disk_even_on_a_graceful_shutdown() {
    let mut server = RedisServer::start();
    let mut connection = server.connection().await;
    let save: Vec<String> = command(&mut connection, redis::cmd("CONFIG").arg("GET").arg("save")).await;
    assert_eq!(save, ["save", ""]);
    let dir: Vec<String> = command(&mut connection, redis::cmd("CONFIG").arg("GET").arg("dir")).await;
    assert_eq!(dir[1], server.dir().to_str().expect("a UTF-8 temp dir"));
    for i in 0..100 {
        let () = command(&mut connection, redis::cmd("SET").arg(format!("k{i}")).arg("v")).await;
    }
    // SHUTDOWN saves a dump.rdb whenever save points are set (redis-server's default), then exits.
    let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN").query_async(&mut connection).await;
    let exited = eventually(Duration::from_secs(5), || {
        let gone = std::net::TcpStream::connect(("127.0.0.1", server.port())).is_err();
        async move { gone }
    })
    .await;
    assert!(exited, "SHUTDOWN stops the server");
    server.kill();
    let left: Vec<_> = std::fs::read_dir(server.dir())
        .expect("the dir exists")
        .map(|entry| entry.expect("an entry").file_name())
        .collect();
    assert!(left.is_empty(), "no dump.rdb, appendonly file or log: {left:?}");
}

#[test]
fn the_lookup_finds_an_executable_on_path_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bin, plain) = (dir.path().join("bin"), dir.path().join("plain"));
    for sub in [&bin, &plain] {
        std::fs::create_dir(sub).expect("mkdir");
    }
    std::fs::create_dir(plain.join("redis-server")).expect("a directory of that name");
    let file = bin.join("redis-server");
    std::fs::write(&file, "#!/bin/sh\n").expect("write");
    let path = std::env::join_paths([&plain, &bin]).expect("a PATH");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(find_on_path("redis-server", &path), None, "not executable");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(find_on_path("redis-server", &path), Some(file));
    assert_eq!(find_on_path("redis-server", "".as_ref()), None);
}

#[test]
fn a_missing_server_is_installed_once_or_fails_saying_what_to_install() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().as_os_str();
    assert_eq!(
        locate(path, None),
        Err(MISSING.to_owned()),
        "no installer: the clear message"
    );

    let failing = || Err("E: Unable to locate package redis-server".to_owned());
    let why = locate(path, Some(&failing)).expect_err("still missing");
    assert!(why.starts_with(MISSING) && why.contains("Unable to locate"), "{why}");

    let calls = std::cell::Cell::new(0);
    let installs = || {
        calls.set(calls.get() + 1);
        let file = dir.path().join("redis-server");
        std::fs::write(&file, "#!/bin/sh\n").map_err(|e| e.to_string())?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
    };
    assert_eq!(locate(path, Some(&installs)), Ok(dir.path().join("redis-server")));
    assert_eq!(locate(path, Some(&installs)), Ok(dir.path().join("redis-server")));
    assert_eq!(calls.get(), 1, "found on PATH, it is not installed again");
}

#[test]
fn the_root_check_reads_the_effective_uid() {
    let status = "Name:\tcargo\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
    assert_eq!(effective_uid(status), Some(0));
    assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
    assert_eq!(effective_uid("Name:\tcargo\n"), None);
}

/// The state letter in `/proc/<pid>/stat` (`T` when stopped), if the process exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

#[tokio::test]
async fn a_binary_can_be_frozen_thawed_and_crashed() {
    let toml = r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"

[[tenant]]
name = "acme"
provider = "static"
upstream = "http://127.0.0.1:9/base"
value = { env = "ACME_VALUE" }
"#;
    let mut binary = Binary::start(toml, &[("ACME_VALUE", "Bearer static-acme-token")]);
    let (pid, healthz) = (binary.pid(), binary.admin_url("/healthz"));
    assert_eq!(get(&healthz).await.status, StatusCode::OK);

    binary.stop();
    let frozen = eventually(
        Duration::from_secs(5),
        || async move { process_state(pid) == Some('T') },
    );
    assert!(frozen.await, "SIGSTOP freezes the process");
    let pending = tokio::spawn(async move { get(&healthz).await.status });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "a frozen binary does not answer");
    binary.cont();
    let answered = tokio::time::timeout(Duration::from_secs(10), pending).await;
    assert_eq!(answered.expect("answers once thawed").expect("task"), StatusCode::OK);

    let status = binary.kill9();
    assert_eq!(status.signal(), Some(9), "SIGKILL, not a drain: {status}");
    assert_eq!(process_state(pid), None, "killed and reaped");
    assert!(
        std::net::TcpStream::connect(binary.addr).is_err(),
        "nothing listens any more"
    );
}
