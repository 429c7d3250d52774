//! PostgreSQL down, and restarted under write load.

use super::*;

// ---------------------------------------------------------------------------------------
// PostgreSQL down, and restarted under load
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn with_postgresql_down_requests_get_503_and_the_service_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    let h = Harness::start_on(pg.url(DATABASE), &[("WAYBILLS_DB_ACQUIRE_TIMEOUT", "1")]).await;
    let cal = &*CALTRAIN;
    let trips = cal.sequential("Lo-130", day("2018-06-01"), 2);
    let w = h
        .create(&wb(
            "2018-06-01",
            "down-v0",
            "down-d0",
            "caltrain",
            "Lo-130",
            &[&trips[0].id],
        ))
        .await;
    let id = id_of(&w);
    let next = wb(
        "2018-06-01",
        "down-v1",
        "down-d1",
        "caltrain",
        "Lo-130",
        &[&trips[1].id],
    );

    pg.stop().await.unwrap();
    h.post_key(&next, "while-down").await.unavailable();
    h.post(&next).await.unavailable();
    h.patch(&id, Some(1), &json!({"status": "cancelled"}))
        .await
        .unavailable();
    h.get_waybill(&id).await.unavailable();
    h.list(&[]).await.unavailable();

    pg.start_server().await.unwrap();
    // Back by itself: the same key now creates the waybill (a 503 is not a stored answer).
    let deadline = Instant::now() + Duration::from_secs(60);
    let created = loop {
        let res = h.post_key(&next, "while-down").await;
        if res.status == 201 {
            break res.created();
        }
        res.unavailable();
        assert!(Instant::now() < deadline, "not recovered after 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let got = h.get_waybill(&id).await;
    assert_eq!(got.ok(), w);
    let replay = h.post_key(&next, "while-down").await;
    assert_eq!(replay.status, 201);
    assert_eq!(replay.json(), created);
    h.patch_ok(&id, 1, &json!({"status": "cancelled"})).await;
    h.assert_rows(2, 2, "after recovery").await;
    h.stop().await;
    pg.stop().await.unwrap();
}

#[derive(Default, Debug)]
struct WriterReport {
    /// key, vehicle, id, when the 201 came.
    created: Vec<(String, String, String, Instant)>,
    unavailable: usize,
    in_flight: usize,
    connection_errors: usize,
    unexpected: Vec<String>,
}

/// Posts waybills with fresh vehicles, drivers and keys until `stop`, retrying each key
/// (same body) until it gets its 201.
async fn writer(
    w: usize,
    base: String,
    trip: String,
    token: Option<String>,
    stop: Arc<AtomicBool>,
) -> WriterReport {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let mut rep = WriterReport::default();
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        i += 1;
        let (vehicle, driver, key) = (
            format!("load-v{w}-{i}"),
            format!("load-d{w}-{i}"),
            format!("load-k{w}-{i}"),
        );
        let body = serde_json::to_vec(&wb(
            "2018-06-01",
            &vehicle,
            &driver,
            "caltrain",
            "Lo-130",
            &[&trip],
        ))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = String::new();
        loop {
            if Instant::now() > deadline {
                rep.unexpected
                    .push(format!("{key}: no 201 within 90 s; last answer {last}"));
                return rep;
            }
            let mut req = client
                .post(format!("{base}/waybills"))
                .header("content-type", "application/json")
                .header("idempotency-key", &key)
                .body(body.clone());
            if let Some(t) = &token {
                req = req.bearer_auth(t);
            }
            let res = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    rep.connection_errors += 1;
                    last = format!("error {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let status = res.status().as_u16();
            let retry_after = res.headers().contains_key("retry-after");
            let text = match res.text().await {
                Ok(t) => t,
                Err(e) => {
                    rep.connection_errors += 1;
                    last = format!("{status}, body error {e}");
                    continue;
                }
            };
            last = format!("{status} {text}");
            match status {
                201 => {
                    let v: Value = serde_json::from_str(&text).unwrap();
                    if v["vehicle_id"] != vehicle.as_str() {
                        rep.unexpected
                            .push(format!("{key}: 201 for another waybill: {text}"));
                    }
                    rep.created.push((key, vehicle, id_of(&v), Instant::now()));
                    break;
                }
                503 => {
                    rep.unavailable += 1;
                    if !retry_after && rep.unexpected.len() < 50 {
                        rep.unexpected
                            .push(format!("{key}: 503 without Retry-After"));
                    }
                }
                409 => rep.in_flight += 1,
                _ => {
                    if rep.unexpected.len() < 50 {
                        rep.unexpected.push(format!("{key}: {status} {text}"));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    rep
}

#[tokio::test]
async fn postgresql_restarted_under_write_load_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pg = EmbeddedPostgres::start(dir.path()).await.unwrap();
    let url = pg.url(DATABASE);
    let h = Harness::start_on(url.clone(), &[]).await;
    let trip = CALTRAIN.sequential("Lo-130", day("2018-06-01"), 1)[0]
        .id
        .clone();

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(writer(
                w,
                h.app.url(""),
                trip.clone(),
                h.token.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stopped_at = Instant::now();
    pg.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    pg.start_server().await.unwrap();
    let restarted_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::SeqCst);

    let mut created = Vec::new();
    let (mut unavailable, mut in_flight, mut conn_errors) = (0, 0, 0);
    let mut unexpected = Vec::new();
    for w in writers {
        let rep = w.await.unwrap();
        created.extend(rep.created);
        unavailable += rep.unavailable;
        in_flight += rep.in_flight;
        conn_errors += rep.connection_errors;
        unexpected.extend(rep.unexpected);
    }
    let before = created.iter().filter(|c| c.3 < stopped_at).count();
    let after = created.iter().filter(|c| c.3 > restarted_at).count();
    eprintln!(
        "restart under load: {} created ({before} before the stop, {after} after the restart), \
         {unavailable} × 503, {in_flight} × 409, {conn_errors} connection errors",
        created.len()
    );
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    assert!(before > 0, "writes before the stop");
    assert!(
        after > 0,
        "writes after the restart: the service recovered by itself"
    );

    // Every 201 has its row, with its id; nothing else is there.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let stored: Vec<(String, String, String)> =
        sqlx::query_as("SELECT id::text, vehicle_id, driver_id FROM waybill")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut by_vehicle: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_driver: HashMap<&str, usize> = HashMap::new();
    for (id, vehicle, driver) in &stored {
        by_vehicle.entry(vehicle).or_default().push(id);
        *by_driver.entry(driver).or_default() += 1;
    }
    for (key, vehicle, id, _) in &created {
        assert_eq!(
            by_vehicle.get(vehicle.as_str()),
            Some(&vec![id.as_str()]),
            "{key}: exactly one row, with the id its 201 gave"
        );
    }
    assert!(
        by_driver.values().all(|n| *n == 1),
        "a driver twice: {by_driver:?}"
    );
    assert_eq!(
        stored.len(),
        created.len(),
        "rows without an acknowledged key"
    );
    conn.close().await.ok();

    // Replaying every key gives its stored answer, and still no new row.
    for (key, vehicle, id, _) in created.iter().step_by(7) {
        let body = wb(
            "2018-06-01",
            vehicle,
            &vehicle.replace("load-v", "load-d"),
            "caltrain",
            "Lo-130",
            &[&trip],
        );
        let res = h.post_key(&body, key).await;
        assert_eq!(res.status, 201, "{key}: {}", res.text());
        assert_eq!(res.json()["id"], id.as_str(), "{key}");
    }
    h.assert_rows(created.len(), created.len(), "after the replays")
        .await;
    h.stop().await;
    pg.stop().await.unwrap();
}
