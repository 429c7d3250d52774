//! Bad requests: bodies that get 400, 413, 415 or 422 and write nothing.

use super::*;

// ---------------------------------------------------------------------------------------
// Raw requests (bodies bigger than the server wants to read)
// ---------------------------------------------------------------------------------------

/// Sends `method path` with a JSON body of `len` bytes (a `notes` string makes it up),
/// by `Content-Length` or chunked, over a raw connection, reading the answer while the
/// body is still being written: a server that refuses early may stop reading.
async fn send_oversized(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    if_match: u64,
    len: usize,
    chunked: bool,
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let what = format!(
        "{method} {path} with a {len}-byte body ({})",
        if chunked { "chunked" } else { "Content-Length" }
    );
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         If-Match: \"{if_match}\"\r\nConnection: close\r\n"
    );
    if let Some(t) = token {
        head += &format!("Authorization: Bearer {t}\r\n");
    }
    if chunked {
        head += "Transfer-Encoding: chunked\r\n\r\n";
    } else {
        head += &format!("Content-Length: {len}\r\n\r\n");
    }
    let prefix = br#"{"service_date":"2018-06-01","vehicle_id":"big","driver_id":"big","gtfs_id":"caltrain","route_id":"Lo-130","trip_ids":["101"],"notes":""#;
    let suffix = br#""}"#;
    assert!(len > prefix.len() + suffix.len());
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let mut body = Vec::with_capacity(len);
        body.extend_from_slice(prefix);
        body.resize(len - suffix.len(), b'x');
        body.extend_from_slice(suffix);
        for piece in body.chunks(64 * 1024) {
            if chunked {
                wr.write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                wr.write_all(piece).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(piece).await?;
            }
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        wr.flush().await?;
        // Keep the write half open: closing it early could end the exchange.
        tokio::time::sleep(Duration::from_secs(60)).await;
        std::io::Result::Ok(())
    });

    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(60);
    let parsed = loop {
        if let Some(p) = parse_response(&buf) {
            break p;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rd.read(&mut chunk)).await {
            Err(_) => panic!(
                "{what}: no complete answer within 60 s: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => match parse_response_at_eof(&buf) {
                Some(p) => break p,
                None => panic!(
                    "{what}: the connection ended without an answer: {:?}",
                    String::from_utf8_lossy(&buf)
                ),
            },
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    writer.abort();
    let (status, headers, body) = parsed;
    let a = Answer {
        what,
        status,
        headers,
        body: body.into(),
    };
    assert!(
        a.phases().iter().any(|p| p == "total"),
        "{}: no Server-Timing total: {:?}",
        a.what,
        a.headers
    );
    a
}

type Parsed = (u16, HeaderMap, Vec<u8>);

/// Status, headers and body of a complete HTTP/1.1 response in `buf`, if it is complete.
fn parse_response(buf: &[u8]) -> Option<Parsed> {
    let (status, headers, rest) = parse_head(buf)?;
    if let Some(len) = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.trim().parse::<usize>().ok())
    {
        return (rest.len() >= len).then(|| (status, headers, rest[..len].to_vec()));
    }
    if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.to_str().unwrap_or_default().contains("chunked"))
    {
        let body = dechunk(rest)?;
        return Some((status, headers, body));
    }
    None
}

/// Like [`parse_response`], when the server has closed: a body without a length ends here.
fn parse_response_at_eof(buf: &[u8]) -> Option<Parsed> {
    parse_response(buf).or_else(|| {
        let (status, headers, rest) = parse_head(buf)?;
        (!headers.contains_key("content-length") && !headers.contains_key("transfer-encoding"))
            .then(|| (status, headers, rest.to_vec()))
    })
}

fn parse_head(buf: &[u8]) -> Option<(u16, HeaderMap, &[u8])> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let mut headers = HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':')?;
        headers.append(
            HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
            HeaderValue::from_str(v.trim()).ok()?,
        );
    }
    Some((status, headers, &buf[end + 4..]))
}

fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// Bad requests
// ---------------------------------------------------------------------------------------

/// PATCH /waybills/{id} with `If-Match: "<version>"`, these bytes and this content type.
async fn patch_bytes(h: &Harness, id: &str, version: u64, ct: &str, body: Vec<u8>) -> Answer {
    let tag = format!("\"{version}\"");
    h.send(
        Method::PATCH,
        &format!("/waybills/{id}"),
        &[("content-type", ct), ("if-match", &tag)],
        Some(body),
    )
    .await
}

#[tokio::test]
async fn bad_bodies_get_400_413_415_or_422_problem_json_and_write_nothing() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let a = cal.sequential("Lo-130", day("2018-06-01"), 1)[0];
    let good = wb(
        "2018-06-01",
        "bad-v",
        "bad-d",
        "caltrain",
        "Lo-130",
        &[&a.id],
    );
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        b[k] = v;
        b
    };

    // Every refusal is checked; the failures are reported together at the end. A bad body
    // wrongly accepted is counted, so that "nothing written" still means something.
    let mut fails: Vec<String> = Vec::new();
    let mut written = 0usize;
    let mut note = |res: &Answer, statuses: &[u16], written: &mut usize| {
        if let Err(e) = res.check_problem(statuses) {
            fails.push(e);
            if res.status == 201 {
                *written += 1;
            }
        }
    };

    // JSON syntax errors: 400. Each is the good body broken, so that syntax is its only
    // fault (a parser that stops at the first problem must find this one).
    let good_text = serde_json::to_string(&good).unwrap();
    let open = &good_text[..good_text.len() - 1];
    let syntax = [
        String::new(),
        "not json".to_owned(),
        open.to_owned(),
        format!("{open},}}"),
        format!("{good_text}}}"),
        format!("{good_text} trailing"),
        good_text.replacen(':', "", 1),
        good_text.replacen('"', "'", 2),
    ];
    for (n, text) in syntax.iter().enumerate() {
        let text = text.replace("bad-v", &format!("syn-v{n}"));
        let text = text.replace("bad-d", &format!("syn-d{n}"));
        let mut res = h.post_bytes(text.as_bytes().to_vec(), &[]).await;
        res.what = format!("{} ({text:?})", res.what);
        note(&res, &[400], &mut written);
    }
    h.assert_rows(written, written, "syntax errors").await;

    // Wrong types, missing fields, unknown fields, malformed dates: 422 (or 400).
    let mut bad: Vec<(String, Value)> = vec![
        ("an array".into(), json!([good.clone()])),
        ("null".into(), Value::Null),
        ("a string".into(), json!("waybill")),
        (
            "a numeric date".into(),
            with("service_date", json!(20180601)),
        ),
        ("a numeric vehicle".into(), with("vehicle_id", json!(921))),
        ("a null driver".into(), with("driver_id", Value::Null)),
        ("trip_ids a string".into(), with("trip_ids", json!(a.id))),
        ("numeric trip ids".into(), with("trip_ids", json!([101]))),
        (
            "an object route".into(),
            with("route_id", json!({"id": "Lo-130"})),
        ),
        ("a numeric number".into(), with("number", json!(7))),
        ("boolean notes".into(), with("notes", json!(true))),
        ("an unknown field".into(), with("colour", json!("red"))),
        (
            "a status on create".into(),
            with("status", json!("completed")),
        ),
        (
            "an id on create".into(),
            with("id", json!(uuid::Uuid::new_v4().to_string())),
        ),
    ];
    for field in [
        "service_date",
        "vehicle_id",
        "driver_id",
        "gtfs_id",
        "route_id",
        "trip_ids",
    ] {
        let mut b = good.clone();
        b.as_object_mut().unwrap().remove(field);
        bad.push((format!("without {field}"), b));
    }
    for date in [
        "2018-06-31",
        "2018-13-01",
        "2018-02-29",
        "2018-6-1",
        "20180601",
        "01/06/2018",
        "",
        "2018-06-01T00:00:00Z",
        "2018-06-01 ",
        " 2018-06-01",
        "+002018-06-01",
        "yesterday",
    ] {
        bad.push((
            format!("service_date {date:?}"),
            with("service_date", json!(date)),
        ));
    }
    for (n, (what, body)) in bad.iter_mut().enumerate() {
        // Own vehicle and driver: a wrongly accepted body does not block the next ones.
        if body["vehicle_id"] == "bad-v" {
            body["vehicle_id"] = json!(format!("bad-v{n}"));
        }
        if body["driver_id"] == "bad-d" {
            body["driver_id"] = json!(format!("bad-d{n}"));
        }
        let mut res = h.post(body).await;
        res.what = format!("{} ({what})", res.what);
        note(&res, &[400, 422], &mut written);
        h.assert_rows(written, written, what).await;
    }

    // Content types: 415.
    let bytes = serde_json::to_vec(&good).unwrap();
    for ct in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let mut res = h.post_bytes(bytes.clone(), &[("content-type", ct)]).await;
        res.what = format!("{} (content-type {ct:?})", res.what);
        note(&res, &[415], &mut written);
    }
    h.assert_rows(written, written, "wrong content types").await;

    // 10 MB: 413, with a length up front and streamed.
    for chunked in [false, true] {
        let res = send_oversized(
            h.app.addr,
            "POST",
            "/waybills",
            h.token.as_deref(),
            1,
            10 * 1024 * 1024,
            chunked,
        )
        .await;
        note(&res, &[413], &mut written);
        h.assert_rows(written, written, &res.what).await;
    }

    // The good body, with a charset, is welcome.
    let res = h
        .post_bytes(
            bytes,
            &[("content-type", "application/json; charset=utf-8")],
        )
        .await;
    let w = res.created();
    let id = id_of(&w);
    h.assert_rows(written + 1, written + 1, "the good one")
        .await;

    // PATCH bodies, each with the current version (a wrongly accepted one moves it on).
    let mut current = 1u64;
    for text in ["", "{", "{\"status\": }"] {
        let res = patch_bytes(
            &h,
            &id,
            current,
            "application/json",
            text.as_bytes().to_vec(),
        )
        .await;
        note(&res, &[400], &mut written);
        current = current_version(&h, &id).await;
    }
    let bad_patches = [
        json!({}),
        json!({"status": "flying"}),
        json!({"status": 3}),
        json!({"status": "in_progress", "odometer_start": "12"}),
        json!({"status": "in_progress", "odometer_start": -1}),
        json!({"status": "in_progress", "odometer_start": 1.5}),
        json!({"status": "in_progress", "odometer_start": 1e30}),
        json!({"status": "in_progress", "odometer_start": 1, "actual_start": "yesterday"}),
        json!({"status": "in_progress", "odometer_start": 1, "actual_start": "2018-06-01 10:00"}),
        json!({"status": "in_progress", "odometer_start": 1, "colour": "red"}),
        json!({"status": "in_progress", "odometer_start": 1, "vehicle_id": "other"}),
        json!({"status": "in_progress", "odometer_start": 1, "notes": 5}),
    ];
    for body in &bad_patches {
        let mut res = h.patch(&id, Some(current), body).await;
        res.what = format!("{} ({body})", res.what);
        note(&res, &[400, 422], &mut written);
        current = current_version(&h, &id).await;
    }
    for ct in ["text/plain", ""] {
        let body = serde_json::to_vec(&json!({"status": "cancelled"})).unwrap();
        let mut res = patch_bytes(&h, &id, current, ct, body).await;
        res.what = format!("{} (content-type {ct:?})", res.what);
        note(&res, &[415], &mut written);
        current = current_version(&h, &id).await;
    }
    let res = send_oversized(
        h.app.addr,
        "PATCH",
        &format!("/waybills/{id}"),
        h.token.as_deref(),
        current,
        10 * 1024 * 1024,
        false,
    )
    .await;
    note(&res, &[413], &mut written);
    let got = h.get_waybill(&id).await;
    if got.ok() != w {
        fails.push(format!(
            "a bad PATCH changed the waybill: {} → {}",
            w,
            got.text()
        ));
    }
    h.assert_rows(written + 1, written + 1, "after bad patches")
        .await;
    h.stop().await;
    assert!(
        fails.is_empty(),
        "{} bad requests not refused as they should be:\n{}",
        fails.len(),
        fails.join("\n")
    );
}
