//! HTTP workers (`http_workers`): several threads, each with its own runtime and its own
//! listening socket on the one address, serve every answer right and drain together.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use gtfs_fetch::server;

use crate::support::spawn_app_with;

/// The thread that served the request: a worker's is named `http-worker-{n}`.
fn thread_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .to_owned()
}

/// `/test/worker` names the serving thread; `/test/slow` does too, after `ms`.
fn probes(ms: u64) -> Router {
    Router::new()
        .route("/test/worker", get(|| async { thread_name() }))
        .route(
            "/test/slow",
            get(move || async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                format!("done on {}", thread_name())
            }),
        )
}

/// A client that opens a new connection for every request (no idle pool): each lands
/// on whichever worker the kernel picks for its port.
fn one_shot_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

#[tokio::test]
async fn several_workers_serve_every_connection_and_drain_together() {
    let mut app = spawn_app_with(
        &[("GTFS_HTTP_WORKERS", "3"), ("GTFS_SHUTDOWN_DRAIN", "0.3")],
        probes(1500),
    )
    .await;
    let config = app.get("/config").await.ok();
    assert_eq!(config["http_workers"], 3);

    // Many connections, several at a time: every answer is right, from a worker.
    let client = one_shot_client();
    let mut workers = BTreeSet::new();
    for _ in 0..10 {
        let batch: Vec<_> = (0..8)
            .map(|_| {
                let (client, url) = (client.clone(), app.url("/test/worker"));
                let health = app.url("/healthz");
                tokio::spawn(async move {
                    let health = client.get(health).send().await.unwrap();
                    assert_eq!(health.status(), 200);
                    let res = client.get(url).send().await.unwrap();
                    assert_eq!(res.status(), 200);
                    res.text().await.unwrap()
                })
            })
            .collect();
        for answer in batch {
            let name = answer.await.unwrap();
            assert!(name.starts_with("http-worker-"), "served on {name:?}");
            workers.insert(name);
        }
    }
    assert!(
        workers.len() > 1,
        "80 connections all went to one worker: {workers:?}"
    );
    assert!(workers.len() <= 3, "{workers:?}");

    // Requests in flight on several workers: shutdown waits for every one of them.
    let in_flight: Vec<_> = (0..12)
        .map(|_| {
            let (client, url) = (client.clone(), app.url("/test/slow"));
            tokio::spawn(async move { client.get(url).send().await?.text().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.signal_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // During the drain every worker still answers, and says it is shutting down.
    for _ in 0..6 {
        let res = client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(res.status(), 503);
    }
    let mut draining = BTreeSet::new();
    for answer in in_flight {
        let text = answer
            .await
            .unwrap()
            .expect("the request in flight finished");
        let worker = text.strip_prefix("done on ").expect(&text);
        draining.insert(worker.to_owned());
    }
    assert!(
        draining.len() > 1,
        "12 slow requests on one worker: {draining:?}"
    );
    let addr = app.addr;
    assert_eq!(app.stop_drained().await.unwrap().abandoned, 0);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "every listener closed"
    );
}

#[tokio::test]
async fn requests_left_on_several_workers_are_all_counted_as_abandoned() {
    let started = Arc::new(AtomicUsize::new(0));
    let hang = Router::new().route(
        "/test/hang",
        get({
            let started = started.clone();
            move || async move {
                started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(60)).await;
                thread_name()
            }
        }),
    );
    let mut app = spawn_app_with(
        &[("GTFS_HTTP_WORKERS", "2"), ("GTFS_SHUTDOWN_TIMEOUT", "0.5")],
        hang,
    )
    .await;
    let client = one_shot_client();
    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let (client, url) = (client.clone(), app.url("/test/hang"));
            tokio::spawn(async move { client.get(url).send().await })
        })
        .collect();
    for _ in 0..100 {
        if started.load(Ordering::SeqCst) == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        started.load(Ordering::SeqCst),
        10,
        "the ten requests are in flight"
    );
    app.signal_shutdown();
    let drained = app.stop_drained().await.unwrap();
    assert_eq!(drained.abandoned, 10, "every worker's requests counted");
    for answer in in_flight {
        assert!(
            answer.await.unwrap().is_err(),
            "an abandoned request got no answer"
        );
    }
}

#[tokio::test]
async fn workers_bind_one_port_and_refuse_an_address_in_use() {
    let listeners = server::bind("127.0.0.1:0".parse().unwrap(), 4).expect("port 0");
    assert_eq!(listeners.len(), 4);
    let addr = listeners.local_addr();
    assert_ne!(addr.port(), 0);
    // Another service on the same address, with as many workers, is refused.
    let err = server::bind(addr, 4).expect_err("the address is in use");
    assert!(format!("{err:#}").contains(&addr.to_string()), "{err:#}");
    let err = server::bind(addr, 1).expect_err("the address is in use");
    assert!(format!("{err:#}").contains("cannot listen"), "{err:#}");
    drop(listeners);
    // Anything else listening there, too.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = server::bind(other.local_addr().unwrap(), 2).expect_err("in use");
    assert!(format!("{err:#}").contains("cannot listen"), "{err:#}");
    // Free again once they are gone.
    let freed = other.local_addr().unwrap();
    drop(other);
    server::bind(freed, 2).expect("a free address");
}
