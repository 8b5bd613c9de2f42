//! Running as a service: health and metrics, reload, systemd notify, the image's entrypoint.

use std::time::Duration;

use crate::helpers::*;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A job that fires every two seconds.
fn ticking(recipients: &[&str]) -> String {
    let mut body = String::from(
        "\n[[jobs]]\nname = \"tick\"\ncron = \"*/2 * * * * *\"\ntemplate_id = \"tmpl\"\n[jobs.data]\nthing1 = \"hi {{name}}\"\n",
    );
    for o in recipients {
        body.push_str(&format!(
            "\n[[recipients]]\nopenid = \"{o}\"\njobs = [\"tick\"]\nname = \"n\"\n"
        ));
    }
    body
}

/// A job that never fires during a test.
fn yearly(recipients: &[&str]) -> String {
    ticking(recipients).replace("*/2 * * * * *", "0 0 0 1 1 *")
}

/// Messages recorded `sent` across every run of job `tick`.
async fn sent_total(store: &wxpush::storage::Store) -> u64 {
    let runs = store.runs(Some(&job_name("tick")), 100).await.unwrap();
    runs.iter().map(|r| r.counts.sent).sum()
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn health_readiness_and_metrics_describe_the_daemon() {
    // Every second, so that two runs come soon.
    let body = ticking(&[
        "oHealth000000000000000000001",
        "oHealth000000000000000000002",
    ])
    .replace("*/2 * * * * *", "* * * * * *");
    let env = TestEnv::with(&body).await;
    env.fake.script(
        "oHealth000000000000000000002",
        std::iter::repeat_n(Scripted::Errcode(43101), 100),
    );
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    wait_until(20, "two runs", || env.fake.send_requests() >= 4).await;

    assert_eq!(get(env.http, "/healthz").await.0, 200);
    let (code, body) = get(env.http, "/readyz").await;
    assert_eq!((code, body.trim()), (200, "ready"));
    let health = env.wxpush(&["health"]).await;
    assert_eq!(health.code, 0, "{health:?}");

    // The metrics agree with the records (read until no run ends in between).
    let store = env.store().await;
    let mut agreed = false;
    for _ in 0..20 {
        let before = sent_total(&store).await;
        let (_, text) = get(env.http, "/metrics").await;
        let after = sent_total(&store).await;
        if before != after {
            continue;
        }
        let sent = metric(
            &text,
            "wxpush_sends_total",
            &["wxpush_job=\"tick\"", "outcome=\"sent\""],
        );
        let refused = metric(
            &text,
            "wxpush_sends_total",
            &["outcome=\"refused\"", "errcode=\"43101\""],
        );
        assert_eq!(sent as u64, after, "{text}");
        assert!(refused >= 1.0, "{text}");
        assert_eq!(
            metric(&text, "wxpush_token_refreshes_total", &[]),
            1.0,
            "{text}"
        );
        assert!(
            metric(
                &text,
                "wxpush_next_fire_timestamp_seconds",
                &["wxpush_job=\"tick\""]
            ) > 1.7e9
        );
        assert!(
            metric(
                &text,
                "wxpush_last_success_timestamp_seconds",
                &["wxpush_job=\"tick\""]
            ) > 1.7e9,
            "{text}"
        );
        assert!(
            text.contains("wxpush_run_duration_seconds_bucket"),
            "{text}"
        );
        assert_eq!(
            metric(&text, "wxpush_recipients", &["wxpush_job=\"tick\""]),
            2.0,
            "{text}"
        );
        // Every series says what it is, and the build names itself.
        for line in text.lines().filter(|l| l.starts_with("wxpush_")) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|x| name.strip_suffix(x))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# HELP {base} ")),
                "no HELP for {base}"
            );
        }
        assert_eq!(
            metric(&text, "wxpush_build_info", &["version=\"", "commit=\""]),
            1.0,
            "{text}"
        );
        assert_eq!(metric(&text, "wxpush_ready", &[]), 1.0, "{text}");
        assert!(
            metric(
                &text,
                "wxpush_previous_fire_timestamp_seconds",
                &["wxpush_job=\"tick\""]
            ) > 1.7e9,
            "{text}"
        );
        agreed = true;
        break;
    }
    assert!(agreed, "runs kept ending while reading metrics");
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn health_reaches_a_daemon_listening_on_every_address_and_names_why_not() {
    let env = TestEnv::with(&yearly(&["oReady0000000000000000000001"])).await;
    // Nothing listens yet: the cause, not reqwest's "error sending request".
    let down = env.wxpush(&["health"]).await;
    assert_eq!(down.code, 1, "{down:?}");
    assert!(
        down.stderr
            .contains("connection refused (is the daemon running"),
        "{}",
        down.stderr
    );
    // `listen = "[::]:PORT"` (every address, IPv6 and IPv4): `health` asks
    // the loopback address, where connecting to `[::]` itself may fail.
    for wildcard in ["[::]", "0.0.0.0"] {
        let listen = format!("{wildcard}:{}", free_addr().port());
        let mut child = env
            .command(&["run"])
            .env("WXPUSH__HTTP__LISTEN", &listen)
            .spawn()
            .unwrap();
        let mut health = env
            .command(&["health"])
            .env("WXPUSH__HTTP__LISTEN", &listen)
            .output()
            .await
            .unwrap();
        for _ in 0..300 {
            if health.status.success() {
                break;
            }
            still_running(&mut child);
            tokio::time::sleep(Duration::from_millis(50)).await;
            health = env
                .command(&["health"])
                .env("WXPUSH__HTTP__LISTEN", &listen)
                .output()
                .await
                .unwrap();
        }
        let health = Run::from(health);
        assert_eq!(health.code, 0, "{listen}: {health:?}");
        assert_eq!(stop(&mut child).await.code(), Some(0));
    }
}

#[tokio::test]
async fn readyz_fails_when_the_database_file_is_gone() {
    if on_postgres() {
        return; // about the SQLite file
    }
    let env = TestEnv::with(&yearly(&["oReady0000000000000000000001"])).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    assert_eq!(get(env.http, "/readyz").await.0, 200);

    std::fs::remove_file(env.db_path()).unwrap();

    let (code, body) = get(env.http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("was removed"), "{body}");
    let health = env.wxpush(&["health"]).await;
    assert_eq!(health.code, 1, "{health:?}");
    assert!(health.stderr.contains("not healthy"), "{}", health.stderr);
    assert_eq!(
        get(env.http, "/healthz").await.0,
        200,
        "the process is still up"
    );
    signal(&child, "-TERM").await;
    child.wait().await.unwrap();
}

#[tokio::test]
async fn readyz_fails_when_no_token_can_be_had() {
    let env = TestEnv::with(&yearly(&["oReady0000000000000000000001"])).await;
    let mut child = env
        .command(&["run"])
        .env("WXPUSH__WECHAT__SECRET", "wrong")
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    let (code, body) = get(env.http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("40125"), "{body}");
    assert!(!body.contains("wrong"), "no secret in the body: {body}");
    signal(&child, "-TERM").await;
    child.wait().await.unwrap();
}

#[tokio::test]
async fn sighup_reloads_jobs_and_recipients_and_keeps_the_old_config_when_the_new_is_bad() {
    let env = TestEnv::with(&yearly(&[
        "oKeep00000000000000000000001",
        "oGone00000000000000000000001",
    ]))
    .await;
    let child = env
        .command(&["run"])
        // Only the signal, not the file watch, may cause these reloads.
        .env("WXPUSH__SCHEDULER__RELOAD_ON_CHANGE", "false")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    assert_eq!(env.fake.send_requests(), 0);

    // The cron now ticks, oGone1 is removed and oNew01 added.
    env.write_config(
        "",
        // Every second, so that the reloaded job fires soon.
        &ticking(&[
            "oKeep00000000000000000000001",
            "oNew000000000000000000000001",
        ])
        .replace("*/2 * * * * *", "* * * * * *"),
    );
    signal(&child, "-HUP").await;
    // Both of the new audience, however the two sends of a run interleave.
    wait_until(20, "the reloaded job fires", || {
        env.fake.accepted_for("oNew000000000000000000000001") >= 1
            && env.fake.accepted_for("oKeep00000000000000000000001") >= 1
    })
    .await;
    assert_eq!(
        env.fake.accepted_for("oGone00000000000000000000001"),
        0,
        "deactivated by the reload"
    );

    let reloaded = |text: &str| metric(text, "wxpush_config_last_reload_successful", &[]);
    assert_eq!(reloaded(&get(env.http, "/metrics").await.1), 1.0);

    // A broken file: the daemon keeps running the last good configuration.
    std::fs::write(&env.config, "[wechat]\nappid = 12\n").unwrap();
    signal(&child, "-HUP").await;
    let mut text = String::new();
    for _ in 0..100 {
        text = get(env.http, "/metrics").await.1;
        if reloaded(&text) == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(reloaded(&text), 0.0, "{text}");
    assert_eq!(metric(&text, "wxpush_reload_failures_total", &[]), 1.0);
    let before = env.fake.accepted_for("oNew000000000000000000000001");
    wait_until(20, "still firing after a bad reload", || {
        env.fake.accepted_for("oNew000000000000000000000001") > before
    })
    .await;

    signal(&child, "-TERM").await;
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(
        stderr.contains("reload refused") && stderr.contains("wxpush.toml"),
        "{stderr}"
    );
}

/// A Monday 00:00 UTC, far from the yearly slot: the in-process daemons' start.
fn monday() -> chrono::DateTime<chrono::Utc> {
    "2026-01-05T00:00:00Z".parse().unwrap()
}

#[tokio::test]
async fn an_edited_config_file_is_reloaded_without_a_signal_once_it_settles() {
    let logs = Logs::capture();
    let env = TestEnv::with(&yearly(&["oKeep00000000000000000000001"])).await;
    let daemon = env.daemon_at(monday()).await;

    // The operator's edit: the cron now ticks and oNew01 is added. No SIGHUP.
    env.write_config(
        "",
        &ticking(&[
            "oKeep00000000000000000000001",
            "oNew000000000000000000000001",
        ]),
    );
    // One poll sees the change, the next finds it settled and reloads.
    daemon.advance(Duration::from_secs(2)).await;
    assert!(
        !logs.text().contains("configuration reloaded"),
        "read before it settled: {}",
        logs.text()
    );
    daemon
        .advance_until(
            Duration::from_secs(1),
            20,
            "the edited job fires",
            async || {
                env.fake.accepted_for("oNew000000000000000000000001") >= 1
                    && env.fake.accepted_for("oKeep00000000000000000000001") >= 1
            },
        )
        .await;

    // A broken edit is reported once and the last good configuration keeps firing.
    std::fs::write(&env.config, "[wechat]\nappid = 12\n").unwrap();
    let before = env.fake.accepted_for("oNew000000000000000000000001");
    daemon
        .advance_until(
            Duration::from_secs(1),
            40,
            "still firing after a bad edit",
            async || env.fake.accepted_for("oNew000000000000000000000001") > before + 2,
        )
        .await;

    daemon.stop().await.unwrap();
    let text = logs.text();
    assert!(text.contains("the config file changed"), "{text}");
    assert!(text.contains("configuration reloaded"), "{text}");
    assert_eq!(
        text.matches("reload refused").count(),
        1,
        "one problem, reported once: {text}"
    );
}

#[tokio::test]
async fn the_daemon_tells_systemd_when_it_is_ready_and_pings_the_watchdog() {
    use std::os::unix::net::UnixDatagram;
    let env = TestEnv::with(&yearly(&["oNotify000000000000000000001"])).await;
    let socket_path = env.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut child = env
        .command(&["run"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .spawn()
        .unwrap();

    let messages = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while got.len() < 3 {
            let n = socket.recv(&mut buf).expect("a notification");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        got
    })
    .await
    .unwrap();

    assert_eq!(messages[0].trim(), "READY=1", "{messages:?}");
    assert!(
        messages[1..].iter().all(|m| m.trim() == "WATCHDOG=1"),
        "{messages:?}"
    );
    // Ready means the schedule is loaded and migrations ran.
    assert!(on_postgres() || env.db_path().exists());
    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn the_release_binary_runs_with_the_images_entrypoint_and_command() {
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let json_line = |key: &str| -> Vec<String> {
        let line = dockerfile.lines().find(|l| l.starts_with(key)).unwrap();
        serde_json::from_str(line[key.len()..].trim()).unwrap()
    };
    let entrypoint = json_line("ENTRYPOINT");
    let cmd = json_line("CMD");
    assert_eq!(entrypoint, ["/usr/local/bin/wxpush"]);
    let healthcheck = dockerfile.lines().find(|l| {
        l.trim_start()
            .starts_with("CMD [\"/usr/local/bin/wxpush\", \"health\"]")
    });
    assert!(healthcheck.is_some(), "HEALTHCHECK uses the binary itself");

    // The image sets these; the config is mounted at WXPUSH_CONFIG.
    let env = TestEnv::with(&yearly(&["oImage0000000000000000000001"])).await;
    let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
    // CI points WXPUSH_BIN at the release build, which is what the image ships.
    let bin = std::env::var("WXPUSH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_wxpush").into());
    let mut child = tokio::process::Command::new(bin)
        .args(&args)
        .env("WXPUSH_CONFIG", &env.config)
        .env(
            "WXPUSH__DATABASE__URL",
            format!("sqlite://{}/state/wxpush.db", env.dir.path().display()),
        )
        .env("WXPUSH__WECHAT__SECRET", SECRET)
        .env("WXPUSH__WECHAT__API_BASE", env.fake.base_url())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    wait_http(env.http).await;
    let health = env.wxpush(&["health"]).await;
    assert_eq!(health.code, 0, "{health:?}");
    assert!(
        env.dir.path().join("state/wxpush.db").exists(),
        "database in the volume path"
    );
    let status = stop(&mut child).await;
    assert_eq!(
        status.code(),
        Some(0),
        "STOPSIGNAL SIGTERM stops it cleanly"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_and_journald_gets_no_timestamps() {
    let env = TestEnv::with(&ticking(&["oLogs00000000000000000000001"])).await;
    let out = env
        .command(&["send", "tick", "--again"])
        .env("WXPUSH__LOG__FORMAT", "json")
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    let end = lines
        .iter()
        .find(|l| l["message"] == "run ended")
        .expect("an end line");
    assert_eq!(end["sent"], 1);
    assert!(end["duration_ms"].is_number());

    let out = env
        .command(&["send", "tick", "--again"])
        .env("JOURNAL_STREAM", "8:12345")
        .output()
        .await
        .unwrap();
    let run = Run::from(out);
    let first = run.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(" INFO") || first.starts_with("INFO"),
        "no timestamp: {first:?}"
    );
    assert!(!run.stderr.contains('\u{1b}'), "no colours");
}

#[tokio::test]
async fn the_intake_on_its_own_listener_serves_no_metrics_and_metrics_serve_no_intake() {
    let public = free_addr();
    let body = format!(
        "{}\n[intake]\nenabled = true\nlisten = \"{public}\"\ncallback_token = \"pushToken42\"\n",
        yearly(&["oKeep00000000000000000000001"])
    );
    let env = TestEnv::with(&body).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    wait_http_path(public, "/v1/subscriptions").await;

    // The public side: the intake routes and nothing else.
    let client = reqwest::Client::new();
    let r = client
        .post(format!("http://{public}/v1/subscriptions"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        400,
        "the intake answers, naming the field"
    );
    let (code, _) = get(
        public,
        "/wechat/callback?signature=x&timestamp=1&nonce=2&echostr=e",
    )
    .await;
    assert_eq!(
        code, 403,
        "the callback is served, and checks its signature"
    );
    for private in ["/metrics", "/readyz", "/healthz"] {
        assert_eq!(get(public, private).await.0, 404, "{private} is not public");
    }
    // The private side: probes and metrics, no intake.
    assert_eq!(get(env.http, "/metrics").await.0, 200);
    assert_eq!(get(env.http, "/readyz").await.0, 200);
    let r = client
        .post(format!("http://{}/v1/subscriptions", env.http))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    signal(&child, "-TERM").await;
    assert_eq!(child.wait().await.unwrap().code(), Some(0));
}

#[tokio::test]
async fn an_intake_listener_on_the_metrics_address_is_refused() {
    let env = TestEnv::with("").await;
    env.write_config(
        "",
        &format!("\n[intake]\nenabled = true\nlisten = \"{}\"\n", env.http),
    );
    let run = env.wxpush(&["check", "--offline"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("intake.listen:") && run.stderr.contains("is http.listen too"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn the_compose_stack_passes_secrets_as_files_and_wxpush_reads_them() {
    let compose = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/compose/docker-compose.yml"),
    )
    .unwrap();
    assert!(!compose.contains("env_file"), "no env files of secrets");
    // The wxpush services' environment, as `KEY: value` lines.
    let vars: Vec<(String, String)> = compose
        .lines()
        .filter_map(|l| {
            let (k, v) = l.trim().split_once(": ")?;
            (k.starts_with("WXPUSH") || k.starts_with("PG")).then(|| (k.to_owned(), v.to_owned()))
        })
        .collect();
    for (k, v) in &vars {
        let secret = ["SECRET", "PASSWORD", "TOKEN", "AES_KEY"]
            .iter()
            .any(|s| k.contains(s));
        if secret {
            assert!(
                k.ends_with("_FILE") && v.starts_with("/run/secrets/"),
                "{k}: {v}: a secret as a value in the environment"
            );
            let name = v.trim_start_matches("/run/secrets/");
            assert!(
                compose.contains(&format!("  {name}:\n    file: ./secrets/{name}")),
                "{name} is a declared secret"
            );
        }
    }
    assert!(
        vars.iter().any(|(k, _)| k == "WXPUSH__WECHAT__SECRET_FILE")
            && vars
                .iter()
                .any(|(k, _)| k == "WXPUSH__DATABASE__PASSWORD_FILE"),
        "{vars:?}"
    );
    // That environment, with the secrets where Docker puts them (here, a
    // folder of the test's), is what wxpush reads.
    let env = TestEnv::with("").await;
    let secrets = env.dir.path().join("run-secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("wechat_secret"), "from-the-secret-file\n").unwrap();
    std::fs::write(secrets.join("pg_password"), "pg-secret\n").unwrap();
    let command = |args: &[&str]| {
        let mut c = env.command(args);
        c.env_remove("WXPUSH__WECHAT__SECRET");
        for (k, v) in &vars {
            let v = v.replace("/run/secrets", &secrets.display().to_string());
            if k != "WXPUSH_CONFIG" {
                c.env(k, v);
            }
        }
        c
    };
    let shown = finish(&mut command(&["config", "show"])).await;
    assert_eq!(shown.code, 0, "{shown:?}");
    for key in ["wechat.secret_file", "database.password_file"] {
        assert!(
            shown
                .stdout
                .lines()
                .any(|l| l.starts_with(key) && l.contains("# env WXPUSH__")),
            "{key}: {}",
            shown.stdout
        );
    }
    // Both files are read (a missing or empty one is an error naming it).
    let checked = finish(&mut command(&["check", "--offline"])).await;
    assert_eq!(checked.code, 0, "{checked:?}");
    for out in [&shown, &checked] {
        assert!(!out.all().contains("pg-secret") && !out.all().contains("from-the-secret-file"));
    }
}

#[tokio::test]
async fn metrics_list_every_configured_job_at_zero_before_it_runs_with_process_metrics() {
    let env = TestEnv::with(&yearly(&["oReady0000000000000000000001"])).await;
    let mut child = env.command(&["run"]).spawn().unwrap();
    wait_http(env.http).await;
    let (_, text) = get(env.http, "/metrics").await;
    assert_eq!(stop(&mut child).await.code(), Some(0));

    // A dashboard lists the job, and an alert sees its first failure as an
    // increase: its series are there before anything happened.
    assert!(
        text.contains(
            "wxpush_job_info{wxpush_job=\"tick\",app=\"default\",timezone=\"Asia/Shanghai\"} 1"
        ),
        "{text}"
    );
    for outcome in [
        "sent", "failed", "refused", "invalid", "unknown", "skipped", "expired",
    ] {
        let line = format!(
            "wxpush_sends_total{{wxpush_job=\"tick\",app=\"default\",outcome=\"{outcome}\",errcode=\"0\"}} 0"
        );
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    for reason in ["outage", "database", "fault", "audience"] {
        assert!(
            text.lines().any(|l| l
                == format!("wxpush_runs_stopped_total{{wxpush_job=\"tick\",app=\"default\",reason=\"{reason}\"}} 0")),
            "{reason}"
        );
    }
    // The standard process series, as node and process exporters name them.
    for name in [
        "process_resident_memory_bytes ",
        "process_cpu_seconds_total ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} in:\n{text}"
        );
    }
    assert!(
        text.contains("wxpush_schedule_loaded_timestamp_seconds{wxpush_job=\"tick\""),
        "{text}"
    );
}
