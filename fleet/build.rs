//! Compiles the fleet protocol with protox (no system `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/alts/fleet/v1/signer.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
