//! Batched gets on real nodes: `Group::get_many` and `POST /v1/groups/{g}/mget` answer
//! what single gets answer, with one GetMany per owner; bad mget requests and GetMany
//! calls get clear errors.

mod common;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use common::{Cluster, Db, db_group, http_get, metric};
use prost::Message;
use serde_json::{Value, json};

/// Calls of `rpc` node `url` made to its peers and answered.
async fn calls(url: &str, rpc: &str) -> u64 {
    let series = format!("peercache_peer_rpc_seconds_count{{rpc=\"{rpc}\",outcome=\"ok\"}}");
    metric(url, &series).await.unwrap_or(0)
}

async fn mget(url: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/groups/g/mget"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_answers_what_single_gets_answer_with_one_call_per_owner() {
    let db = Db::default();
    let cluster = Cluster::start(3, db_group(&db)).await;
    let keys: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
    for gone in ["k3", "k17", "k29"] {
        db.write(gone, None);
    }
    let n0 = &cluster.nodes[0].url;
    let (status, answer) = mget(n0, &json!({ "keys": keys })).await;
    assert_eq!(status, 200, "{answer}");
    // Node 0 asked each other owner once, for all of its keys at once.
    let owners: std::collections::BTreeSet<usize> = (keys.iter())
        .map(|k| cluster.owner(k))
        .filter(|&o| o != 0)
        .collect();
    assert_eq!(owners.len(), 2, "the keys span all three owners");
    assert_eq!(calls(n0, "get_many").await, 2, "one GetMany per owner");
    assert_eq!(calls(n0, "get").await, 0, "no single get");
    for key in &keys {
        assert_eq!(db.loads(key), 1, "{key} loaded once, by its owner");
    }
    // The same answers, key by key, as single gets through node 1.
    let results = answer["results"].as_array().unwrap();
    assert_eq!(results.len(), keys.len());
    let n1 = &cluster.nodes[1].url;
    for (key, result) in keys.iter().zip(results) {
        assert_eq!(result["key"], key.as_str());
        let (status, body) = http_get(&format!("{n1}/v1/groups/g/keys/{key}")).await;
        if status == 200 {
            assert_eq!(result["value"], std::str::from_utf8(&body).unwrap());
        } else {
            assert_eq!(result["status"], status, "{key}: {result}");
            assert!(result["error"].as_str().unwrap().contains(key.as_str()));
        }
    }
    assert_eq!(results[3]["status"], 404);
    // The binary form carries the same bytes, and a non-UTF-8 value in JSON is base64.
    db.write("bin", Some("placeholder"));
    cluster.nodes[0].group("g").remove("bin").await.unwrap();
    let raw = Bytes::from_static(&[0xff, 0x00, 0xfe]);
    cluster.nodes[0]
        .group("g")
        .set("bin", raw.clone(), None)
        .await
        .unwrap();
    let (_, answer) = mget(n0, &json!({ "keys": ["bin"] })).await;
    let text = answer["results"][0]["value"].as_str().unwrap();
    assert_eq!(answer["results"][0]["encoding"], "base64");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    assert_eq!(decoded, raw);
    let binary = reqwest::Client::new()
        .post(format!("{n0}/v1/groups/g/mget"))
        .header("accept", "application/x-protobuf")
        .body(json!({ "keys": ["bin", "k3", "k4"] }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        binary.headers()["content-type"],
        "application/x-protobuf",
        "the binary form"
    );
    let decoded = peercache::proto::GetManyResponse::decode(binary.bytes().await.unwrap()).unwrap();
    use peercache::proto::get_many_entry::Result as Entry;
    let entries: Vec<Entry> = decoded
        .entries
        .into_iter()
        .map(|e| e.result.unwrap())
        .collect();
    assert!(matches!(&entries[0], Entry::Found(f) if f.value == raw));
    assert!(matches!(&entries[1], Entry::Error(e) if e.kind == "not-found"));
    assert!(matches!(&entries[2], Entry::Found(f) if f.value == "v:k4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mget_requests_get_clear_errors_and_the_node_serves_on() {
    let db = Db::default();
    let cluster = Cluster::start(1, db_group(&db)).await;
    let url = &cluster.nodes[0].url;
    let post = |path: &str, body: &'static str| {
        reqwest::Client::new()
            .post(format!("{url}{path}"))
            .body(body)
            .send()
    };
    let r = post("/v1/groups/g/mget", "{\"keys\": 7}").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text().await.unwrap().contains("keys"),
        "says what it expects"
    );
    let r = post("/v1/groups/nope/mget", "{\"keys\": []}")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let too_many: Vec<String> = (0..=peercache::http::MAX_MGET_KEYS)
        .map(|i| i.to_string())
        .collect();
    let (status, answer) = mget(url, &json!({ "keys": too_many })).await;
    assert_eq!(status, 413, "{answer}");
    // An empty or overlong key fails alone.
    let long = "x".repeat(5000);
    let (status, answer) = mget(url, &json!({ "keys": ["", long, "fine"] })).await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["status"], 400);
    assert_eq!(answer["results"][1]["status"], 414);
    assert_eq!(answer["results"][2]["value"], "v:fine");
    let (status, _) = mget(url, &json!({ "keys": [] })).await;
    assert_eq!(status, 200);
    assert_eq!(http_get(&format!("{url}/v1/groups/g/keys/a")).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_many_of_too_many_keys_or_an_unknown_group_is_refused() {
    let db = Db::default();
    let cluster = Cluster::start(1, db_group(&db)).await;
    let node = &cluster.nodes[0];
    let mut raw = common::raw_peer(&node.id).await;
    let many = |group: &str, keys: usize| peercache::proto::GetManyRequest {
        group: group.into(),
        keys: (0..keys).map(|i| format!("k{i}")).collect(),
        deadline_ms: 2000,
        accept: vec![],
        max_reply_bytes: 0,
    };
    let status = raw.get_many(many("g", 5000)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    let status = raw.get_many(many("nope", 2)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(db.total_loads(), 0, "nothing loaded for refused calls");
    let answer = raw.get_many(many("g", 3)).await.unwrap().into_inner();
    assert_eq!(answer.entries.len(), 3);
    assert_eq!(db.total_loads(), 3);
}

/// Values larger together than one message: the answer carries what fits, and the
/// asker gets the rest alone, so every key is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_that_do_not_fit_one_answer_are_asked_for_alone() {
    let db = Db::default();
    let cluster = Cluster::start(2, |_, reg: &peercache::group::Registry| {
        reg.group("g")
            .capacity(64 << 20)
            .max_value_len(4 << 20)
            .timeout(Duration::from_secs(10))
            .loader(db.clone())
            .build()
            .unwrap();
    })
    .await;
    let keys: Vec<String> = (0..8)
        .map(|i| cluster.key_owned_by(1, &format!("big{i}-")))
        .collect();
    let big = "x".repeat(3 << 20);
    for key in &keys {
        db.write(key, Some(&big));
    }
    let results = cluster.nodes[0].group("g").get_many(&keys).await;
    for result in &results {
        assert_eq!(result.as_ref().unwrap().len(), big.len());
    }
    let url = &cluster.nodes[0].url;
    assert_eq!(calls(url, "get_many").await, 1, "one GetMany");
    assert!(
        calls(url, "get").await >= 6,
        "the values that did not fit came alone"
    );
}
