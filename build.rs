//! Compiles proto/ with protox (pure Rust), so no system `protoc` is needed for our protos.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        ["peercache/v1/peer.proto", "peercache/v1/registry.proto"],
        ["proto"],
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".peercache.v1")
        .compile_fds(fds)?;
    Ok(())
}
