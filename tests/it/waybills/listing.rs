//! Lists: filters, their combinations, paging.

use super::*;

// ---------------------------------------------------------------------------------------
// Lists
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn lists_filter_combine_and_page_through_every_row_once() {
    let h = Harness::start(&[]).await;
    let cal = &*CALTRAIN;
    let routes = ["Lo-130", "Bu-130", "Li-130"];
    let mut dates = Vec::new();
    let mut d = day("2018-06-04");
    while dates.len() < 35 {
        if cal.runs("mtwtf", d) {
            dates.push(d);
        }
        d = d.tomorrow().unwrap();
    }

    #[derive(Debug)]
    struct Row {
        date: String,
        route: &'static str,
        vehicle: String,
        driver: String,
        status: &'static str,
    }
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for i in 0..105usize {
        let (date, slot) = (dates[i / 3], i % 3);
        let route = routes[slot];
        let day_trips = cal.daytime(route, date);
        let trip = day_trips[(i / 3) % day_trips.len()];
        // Within a date vehicles and drivers differ; across dates nothing overlaps.
        let vehicle = format!("veh-{slot}");
        let driver = format!("drv-{}", (slot + i / 3) % 3);
        let w = h
            .create(&wb(
                &date.to_string(),
                &vehicle,
                &driver,
                "caltrain",
                route,
                &[&trip.id],
            ))
            .await;
        let id = id_of(&w);
        let status = if i % 5 == 0 {
            h.patch_ok(&id, 1, &json!({"status": "cancelled"})).await;
            "cancelled"
        } else if i % 7 == 0 {
            h.patch_ok(
                &id,
                1,
                &json!({"status": "in_progress", "odometer_start": 1}),
            )
            .await;
            "in_progress"
        } else {
            "issued"
        };
        rows.insert(
            id,
            Row {
                date: date.to_string(),
                route,
                vehicle,
                driver,
                status,
            },
        );
    }

    // Every row once, whatever the page size.
    let all: BTreeSet<String> = rows.keys().cloned().collect();
    for limit in [1000, 100, 7, 1] {
        let got = h.list_all(&[], limit).await;
        let ids: BTreeSet<String> = got.iter().map(id_of).collect();
        assert_eq!(ids, all, "limit {limit}");
        for entry in &got {
            let r = &rows[&id_of(entry)];
            assert_eq!(entry["service_date"], r.date, "{entry}");
            assert_eq!(entry["route_id"], r.route, "{entry}");
            assert_eq!(entry["vehicle_id"], r.vehicle, "{entry}");
            assert_eq!(entry["driver_id"], r.driver, "{entry}");
            assert_eq!(entry["status"], r.status, "{entry}");
        }
    }
    // The default limit is 100.
    let (first, next) = page(&h.list(&[]).await);
    assert_eq!(first.len(), 100, "default limit");
    let next = next.expect("a cursor after 100 of 105");
    let (second, last) = page(&h.list(&[("cursor", &next)]).await);
    assert_eq!(second.len(), 5);
    assert_eq!(last, None);
    let ids: BTreeSet<String> = first.iter().chain(&second).map(id_of).collect();
    assert_eq!(ids, all);

    // Filters, alone and combined.
    let d4 = dates[4].to_string();
    let filters: Vec<Vec<(&str, &str)>> = vec![
        vec![("service_date", &d4)],
        vec![("route_id", "Bu-130")],
        vec![("vehicle_id", "veh-1")],
        vec![("driver_id", "drv-2")],
        vec![("status", "cancelled")],
        vec![("status", "in_progress")],
        vec![("status", "issued")],
        vec![("service_date", &d4), ("route_id", "Li-130")],
        vec![("vehicle_id", "veh-0"), ("status", "issued")],
        vec![
            ("route_id", "Lo-130"),
            ("driver_id", "drv-1"),
            ("status", "cancelled"),
        ],
        vec![
            ("driver_id", "drv-0"),
            ("vehicle_id", "veh-2"),
            ("route_id", "Li-130"),
        ],
        vec![("vehicle_id", "nobody")],
        vec![("service_date", "2019-01-01")],
    ];
    for f in &filters {
        let expected: BTreeSet<String> = rows
            .iter()
            .filter(|(_, r)| {
                f.iter().all(|(k, v)| match *k {
                    "service_date" => r.date == *v,
                    "route_id" => r.route == *v,
                    "vehicle_id" => r.vehicle == *v,
                    "driver_id" => r.driver == *v,
                    "status" => r.status == *v,
                    _ => unreachable!(),
                })
            })
            .map(|(id, _)| id.clone())
            .collect();
        for limit in [1000, 4] {
            let got: BTreeSet<String> = h.list_all(f, limit).await.iter().map(id_of).collect();
            assert_eq!(got, expected, "filter {f:?} limit {limit}");
        }
    }

    // Out-of-range limits and garbage cursors are the client's error.
    for q in [
        vec![("limit", "0")],
        vec![("limit", "1001")],
        vec![("limit", "-1")],
        vec![("limit", "lots")],
        vec![("cursor", "garbage")],
        vec![("service_date", "2018-13-01")],
    ] {
        h.list(&q).await.problem(&[400, 422]);
    }
    h.stop().await;
}
