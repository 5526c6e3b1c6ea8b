//! Health checks for probes that cannot speak ALTS: a plaintext port that
//! serves grpc.health.v1 and nothing else, next to the ALTS port.

mod common;

use alts_examples::EchoService;
use alts_examples::echo::EchoRequest;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use common::*;
use tonic::Code;
use tonic::transport::Endpoint;
use tonic_alts::health::{HealthPortError, PlaintextHealth};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;

async fn plain_channel(addr: std::net::SocketAddr) -> tonic::transport::Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect_timeout(WAIT)
        .connect()
        .await
        .expect("plaintext connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_port_serves_health_and_nothing_else() {
    let mut fx = Fixture::new();
    let s = fx.issue("echo-prod");
    let alts_server = serve_plain(fx.config(&s)).await;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("alts.examples.echo.Echo", ServingStatus::Serving)
        .await;
    let port = PlaintextHealth::new(health)
        .expect("health service")
        .bind("127.0.0.1:0")
        .await
        .expect("bind");

    // A probe without ALTS gets the status.
    let channel = plain_channel(port.local_addr()).await;
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "alts.examples.echo.Echo".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, Wire::Serving as i32);
    // ...and reaches no other service there.
    let err = EchoClient::new(channel)
        .unary(EchoRequest {
            message: "x".into(),
            payload: vec![],
        })
        .await
        .expect_err("echo is not on the plaintext port");
    assert_eq!(err.code(), Code::Unimplemented);

    // The ALTS port still requires ALTS.
    let plain = Endpoint::from_shared(format!("http://{}", alts_server.addr))
        .expect("uri")
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plain {
        let res = HealthClient::new(channel)
            .check(HealthCheckRequest { service: "".into() })
            .await;
        assert!(res.is_err(), "plaintext RPC on the ALTS port answered");
    }

    // Status changes reach the probe.
    reporter
        .set_service_status("alts.examples.echo.Echo", ServingStatus::NotServing)
        .await;
    let status = HealthClient::new(plain_channel(port.local_addr()).await)
        .check(HealthCheckRequest {
            service: "alts.examples.echo.Echo".into(),
        })
        .await
        .expect("health check")
        .into_inner()
        .status;
    assert_eq!(status, Wire::NotServing as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_port_refuses_other_services_and_wildcard_addresses_by_default() {
    let err = PlaintextHealth::new(EchoServer::new(EchoService)).expect_err("not a health service");
    assert!(matches!(err, HealthPortError::NotHealthService(_)), "{err}");

    let (_reporter, health) = tonic_health::server::health_reporter();
    let err = PlaintextHealth::new(health.clone())
        .expect("health")
        .bind("0.0.0.0:0")
        .await
        .expect_err("wildcard address without opt-in");
    assert!(matches!(err, HealthPortError::NotLoopback(_)), "{err}");
    let port = PlaintextHealth::new(health)
        .expect("health")
        .any_address()
        .bind("0.0.0.0:0")
        .await
        .expect("explicit opt-in");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port.local_addr().port()));
    HealthClient::new(plain_channel(addr).await)
        .check(HealthCheckRequest { service: "".into() })
        .await
        .expect("overall status");
}
