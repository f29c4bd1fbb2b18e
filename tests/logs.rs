//! logs against the real engine, through rmcp's client over stdio (and the
//! CLI mirror): two talkers (tests/stacks/logs) print numbered lines on
//! stdout and stderr a tenth of a second apart; one prints its password,
//! one a 5000-byte line.
mod common;

use common::docker::{engine, DockerStack};
use common::*;
use rmcp::model::ProtocolVersion;
use serde_json::{json, Value};

const ERA: ProtocolVersion = ProtocolVersion::V_2025_11_25;
const PASSWORD: &str = "talker-s3cret-pw-42";

fn lines(out: &Value) -> Vec<Value> {
    out["lines"].as_array().expect("lines").clone()
}

fn texts(out: &Value) -> Vec<String> {
    lines(out)
        .iter()
        .map(|l| l["untrusted_output"].as_str().expect("text").to_string())
        .collect()
}

fn up(stack: &DockerStack) {
    let o = stack.compose(&["up", "-d", "--wait"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[tokio::test]
async fn merged_bounded_redacted_and_filtered() {
    let Some(host) = engine() else { return };
    let stack = DockerStack::new("logs", &host);
    up(&stack);
    let client = stack
        .client(&[], TestClient::new(Person::Absent, ERA))
        .await;
    let tools = client.list_all_tools().await.expect("tools");

    // Everything: both services, merged by time.
    let r = call(&client, "logs", json!({"tail": 1000})).await;
    assert!(!is_error(&r), "{r:?}");
    let all = structured(&r);
    validate_output(&tools, "logs", &all);
    assert_eq!(all["untrusted"], true);
    assert_eq!(all["services"], json!(["a", "b"]));
    let every = lines(&all);
    // a: 1 + 40 lines, b: 1 + 40 lines.
    assert_eq!(every.len(), 82, "{all:#}");
    assert_eq!(all["truncated"], false, "{all:#}");
    let times: Vec<&str> = every
        .iter()
        .map(|l| l["time"].as_str().expect("time"))
        .collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(
        times, sorted,
        "merged by time (fixed-width RFC 3339 sorts as text)"
    );
    let services: Vec<&str> = every
        .iter()
        .map(|l| l["service"].as_str().expect("s"))
        .collect();
    let switches = services.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(
        switches > 20,
        "the services interleave, not one after the other: {services:?}"
    );
    for svc in ["a", "b"] {
        let own: Vec<String> = every
            .iter()
            .filter(|l| l["service"] == svc && l["stream"] == "stdout")
            .filter_map(|l| l["untrusted_output"].as_str())
            .filter(|t| t.starts_with(&format!("{svc} line")))
            .map(str::to_string)
            .collect();
        let want: Vec<String> = (0..20).map(|i| format!("{svc} line {i}")).collect();
        assert_eq!(own, want, "each service keeps its own order");
        assert!(every.iter().any(|l| l["service"] == svc
            && l["stream"] == "stderr"
            && l["untrusted_output"] == format!("{svc} err 0")));
    }

    // The password a printed is cut out, everywhere in the answer.
    let text = serde_json::to_string(&all).expect("json");
    assert!(!text.contains(PASSWORD), "the password leaked");
    assert!(texts(&all)
        .iter()
        .any(|t| t == "a starting; the password is [redacted]"));
    // The 5000-byte line is cut at 4 KiB, with a note.
    let long = texts(&all)
        .into_iter()
        .find(|t| t.starts_with("00000"))
        .expect("the long line");
    assert!(
        long.len() < 4200 && long.ends_with("[line cut: 5000 bytes]"),
        "{}",
        long.len()
    );
    assert!(
        all["notes"].to_string().contains("longer than 4096 bytes"),
        "{all:#}"
    );

    // tail: the newest N of the merged lines, with a note.
    let t = structured(&call(&client, "logs", json!({"tail": 5})).await);
    validate_output(&tools, "logs", &t);
    assert_eq!(texts(&t), texts(&all)[77..].to_vec());
    assert_eq!(t["truncated"], true);
    assert!(t["notes"].to_string().contains("tail"), "{t:#}");

    // One service, one stream.
    let b = structured(
        &call(
            &client,
            "logs",
            json!({"services": ["b"], "streams": "stderr", "tail": 100}),
        )
        .await,
    );
    assert_eq!(b["services"], json!(["b"]));
    let got = lines(&b);
    assert_eq!(got.len(), 20);
    assert!(got
        .iter()
        .all(|l| l["service"] == "b" && l["stream"] == "stderr"));

    // since / until: exact bounds on the engine's times.
    let mid = times[41].to_string();
    let since = structured(&call(&client, "logs", json!({"since": mid, "tail": 1000})).await);
    let want_after: Vec<&str> = times
        .iter()
        .copied()
        .filter(|t| *t >= mid.as_str())
        .collect();
    let got_after: Vec<String> = lines(&since)
        .iter()
        .map(|l| l["time"].as_str().expect("t").to_string())
        .collect();
    assert_eq!(got_after, want_after, "since is inclusive and exact");
    assert_eq!(since["since"], mid.as_str());
    let until = structured(&call(&client, "logs", json!({"until": mid, "tail": 1000})).await);
    let want_before: Vec<&str> = times
        .iter()
        .copied()
        .filter(|t| *t <= mid.as_str())
        .collect();
    assert_eq!(lines(&until).len(), want_before.len());
    assert!(lines(&until)
        .iter()
        .all(|l| l["time"].as_str().expect("t") <= mid.as_str()));
    // until with tail: the newest lines before the bound, not the newest overall.
    let until_tail = structured(&call(&client, "logs", json!({"until": mid, "tail": 3})).await);
    let got: Vec<String> = lines(&until_tail)
        .iter()
        .map(|l| l["time"].as_str().expect("t").to_string())
        .collect();
    assert_eq!(got, want_before[want_before.len() - 3..].to_vec());
    let relative = structured(&call(&client, "logs", json!({"since": "1h", "tail": 1000})).await);
    assert_eq!(lines(&relative).len(), 82);
    let future = structured(&call(&client, "logs", json!({"until": "2000-01-01T00:00:00Z"})).await);
    assert_eq!(lines(&future).len(), 0);

    // grep: a literal, a regex, case-insensitive; matched against the redacted text.
    let g = structured(&call(&client, "logs", json!({"grep": "line 1", "tail": 100})).await);
    assert!(texts(&g).iter().all(|t| t.contains("line 1")));
    assert_eq!(
        texts(&g).len(),
        22,
        "line 1 and line 10-19 of both: {:?}",
        texts(&g)
    );
    let re = structured(
        &call(
            &client,
            "logs",
            json!({"grep": "^b (line|err) 1[0-2]$", "regex": true, "tail": 100}),
        )
        .await,
    );
    assert_eq!(texts(&re).len(), 6, "{:?}", texts(&re));
    let ci = structured(
        &call(
            &client,
            "logs",
            json!({"grep": "A ERR 3", "ignore_case": true}),
        )
        .await,
    );
    assert_eq!(texts(&ci), ["a err 3"]);
    let probe = structured(&call(&client, "logs", json!({"grep": "s3cret"})).await);
    assert_eq!(lines(&probe).len(), 0, "grep cannot find a redacted secret");

    // The byte cap, with a note.
    let capped = structured(&call(&client, "logs", json!({"tail": 1000, "max_bytes": 1024})).await);
    let bytes: usize = texts(&capped).iter().map(|t| t.len() + 1).sum();
    assert!(bytes <= 1024, "{bytes}");
    assert_eq!(capped["bytes"], bytes);
    assert_eq!(capped["truncated"], true);
    assert!(
        capped["notes"].to_string().contains("max_bytes 1024"),
        "{capped:#}"
    );
    assert_eq!(
        texts(&capped),
        texts(&all)[82 - texts(&capped).len()..].to_vec(),
        "the newest lines are kept"
    );

    // Bad input names the field; the server keeps serving.
    for (args, field) in [
        (json!({"grep": "(unclosed", "regex": true}), "grep"),
        (json!({"since": "yesterday"}), "since"),
        (json!({"tail": 0}), "tail"),
        (json!({"max_bytes": 10}), "max_bytes"),
        (json!({"services": ["nope"]}), "services[0]"),
        (json!({"streams": "all"}), "streams"),
        (json!({"since": "1m", "until": "2h"}), "until"),
    ] {
        let r = call(&client, "logs", args.clone()).await;
        assert!(is_error(&r), "{args}: {r:?}");
        let e = structured(&r);
        assert_eq!(e["error"]["field"], field, "{args}: {e:#}");
        assert_eq!(e["error"]["kind"], "invalid_input");
    }
    let e = structured(&call(&client, "logs", json!({"grep": "(unclosed", "regex": true})).await);
    assert!(
        e["error"]["message"]
            .as_str()
            .expect("m")
            .contains("not a valid regular expression"),
        "{e:#}"
    );
    let still = call(&client, "logs", json!({"tail": 1})).await;
    assert!(!is_error(&still));
    client.cancel().await.expect("close");

    // The CLI mirror prints the lines plainly.
    let out = std::process::Command::new(bin())
        .args(["logs", "--stack"])
        .arg(stack.path())
        .args(["--services", "a", "--tail", "3", "--streams", "stdout"])
        .env("DOCKER_HOST", &host)
        .output()
        .expect("cli");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain: Vec<&str> = text.lines().filter(|l| l.contains(" | ")).collect();
    assert_eq!(plain.len(), 3, "{text}");
    assert!(plain[2].ends_with("stdout | a line 19"), "{text}");
    assert!(plain[2].contains("-a-1 "), "{text}");
}
