//! Generates the CSI v1 types and gRPC service traits from the spec's own
//! `proto/csi.proto` (protox compiles it in Rust: no protoc needed).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/csi.proto");
    let fds = protox::compile(["csi.proto"], ["proto"])?;
    // Clients too: the tests talk CSI to `rbdvol csi` as dockerd would.
    tonic_prost_build::configure().build_server(true).build_client(true).generate_default_stubs(true).compile_fds(fds)?;
    Ok(())
}
