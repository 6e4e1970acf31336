//! The builder rejects every bad input with an error naming the bad value, and the
//! client's types are `Send + Sync`.

use std::time::Duration;

use redfence::{Client, ConfigError, Error};

fn err(b: redfence::ClientBuilder) -> (ConfigError, String) {
    match b.build() {
        Err(e) => {
            let msg = e.to_string();
            // Into the crate's error with `?`, printed the same (no prefix, no repeat).
            assert_eq!(Error::from(e.clone()).to_string(), msg);
            (e, msg)
        }
        Ok(c) => panic!("expected a config error, got {c:?}"),
    }
}

fn three() -> redfence::ClientBuilder {
    Client::builder().nodes([
        "redis://127.0.0.1:7001",
        "redis://127.0.0.1:7002",
        "redis://127.0.0.1:7003",
    ])
}

#[test]
fn no_nodes() {
    assert_eq!(err(Client::builder()).0, ConfigError::NoNodes);
}

#[test]
fn duplicate_host_and_port_even_with_another_db() {
    let (e, msg) = err(three().node("redis://127.0.0.1:7002/3"));
    assert!(
        matches!(e, ConfigError::DuplicateNode { ref node, .. } if node == "127.0.0.1:7002"),
        "{e:?}"
    );
    assert!(msg.contains("127.0.0.1:7002/3"), "{msg}");
    let (e, _) = err(three()
        .node("redis://LOCALHOST:9")
        .node("redis://localhost:9"));
    assert!(matches!(e, ConfigError::DuplicateNode { .. }));
}

/// `localhost`, `127.0.0.1`, `::1` and a v4-mapped address on one port are one server:
/// given twice, it would vote twice.
#[test]
fn aliases_of_one_address_are_duplicates() {
    for (a, b) in [
        ("redis://localhost:7002", "redis://127.0.0.1:7002"),
        ("redis://[::1]:7010", "redis://localhost:7010"),
        ("redis://[::ffff:10.0.0.7]:7010", "redis://10.0.0.7:7010"),
        ("redis://[0:0:0:0:0:0:0:1]:7010", "redis://[::1]:7010"),
    ] {
        let (e, msg) = err(Client::builder().nodes([a, b, "redis://10.9.9.9:1"]));
        assert!(
            matches!(e, ConfigError::DuplicateNode { .. }),
            "{a} {b}: {e:?}"
        );
        assert!(msg.contains(a) && msg.contains(b), "{msg}");
    }
    // Other loopback addresses and other ports are other servers.
    Client::builder()
        .nodes([
            "redis://127.0.0.1:7002",
            "redis://127.0.0.2:7002",
            "redis://localhost:7003",
        ])
        .build()
        .unwrap();
}

#[test]
fn unparsable_urls_are_named_with_passwords_redacted() {
    for bad in [
        "http://127.0.0.1:7001",
        "redis://:hunter2@127.0.0.1:notaport",
        "nonsense",
    ] {
        let (e, msg) = err(Client::builder().node(bad));
        assert!(matches!(e, ConfigError::InvalidUrl { .. }), "{bad}: {e:?}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let shown = bad.replace("hunter2", "<redacted>");
        assert!(msg.contains(&shown), "{msg} does not name {shown}");
    }
}

#[test]
fn ttl_too_small_for_the_drift_and_timeouts() {
    let (e, msg) = err(three().ttl(Duration::from_millis(50)));
    let ConfigError::TtlTooSmall { minimum, .. } = e else {
        panic!("{e:?}")
    };
    assert!(msg.contains("50ms"), "{msg}");
    three().ttl(minimum).build().unwrap();
    let (e, _) = err(three().ttl(Duration::ZERO));
    assert_eq!(e, ConfigError::Zero { setting: "ttl" });
    let (e, _) = err(three().ttl(Duration::from_secs(7 * 24 * 3600)));
    assert!(matches!(e, ConfigError::TooLarge { setting: "ttl", .. }));
}

#[test]
fn zero_and_absurd_timeouts() {
    for (b, setting) in [
        (three().node_timeout(Duration::ZERO), "node_timeout"),
        (three().connect_timeout(Duration::ZERO), "connect_timeout"),
        (three().wait(Duration::ZERO), "wait"),
    ] {
        let (e, msg) = err(b);
        assert_eq!(e, ConfigError::Zero { setting });
        assert!(msg.contains(setting));
    }
    let (e, msg) = err(three().node_timeout(Duration::from_secs(3600)));
    assert!(matches!(
        e,
        ConfigError::TooLarge {
            setting: "node_timeout",
            ..
        }
    ));
    assert!(msg.contains("3600s"), "{msg}");
}

#[test]
fn other_settings() {
    assert_eq!(
        err(three().drift_factor(0.7)).0,
        ConfigError::DriftFactor(0.7)
    );
    assert!(matches!(
        err(three().drift_factor(f64::NAN)).0,
        ConfigError::DriftFactor(_)
    ));
    assert!(matches!(
        err(three().prefix("a{b")).0,
        ConfigError::Prefix { .. }
    ));
    assert!(matches!(
        err(three().prefix("")).0,
        ConfigError::Prefix { .. }
    ));
    assert!(matches!(
        err(three()
            .retry_delay(Duration::from_millis(10))
            .retry_jitter(Duration::from_millis(20)))
        .0,
        ConfigError::Jitter { .. }
    ));
    assert_eq!(
        err(three().max_in_flight(0)).0,
        ConfigError::Zero {
            setting: "max_in_flight"
        }
    );
}

#[test]
fn debug_output_redacts_passwords() {
    let b = Client::builder().node("redis://user:hunter2@127.0.0.1:7001");
    assert!(!format!("{b:?}").contains("hunter2"));
    let c = b.build().unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[tokio::test]
async fn bad_resource_names_and_options() {
    let c = three().build().unwrap();
    let e = c.try_acquire("").await.unwrap_err();
    assert!(matches!(e, Error::InvalidResource { .. }), "{e:?}");
    let long = "x".repeat(redfence::MAX_RESOURCE_LEN + 1);
    assert!(matches!(
        c.try_acquire(&long).await.unwrap_err(),
        Error::InvalidResource { .. }
    ));
    let e = c
        .acquire_with(
            "r",
            redfence::AcquireOptions::new().ttl(Duration::from_millis(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Config(ConfigError::TtlTooSmall { .. })),
        "{e:?}"
    );
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
    assert_send_sync::<redfence::LockGuard>();
    assert_send_sync::<Error>();
    assert_send_sync::<redfence::testkit::Cluster>();
}
