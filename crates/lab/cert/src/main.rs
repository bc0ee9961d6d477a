//! lab-cert: `make cert`. Writes a small CA and a server certificate it signs for 127.0.0.1 and
//! localhost into `--out` (ca.pem, server.pem, server.key), and says how to use them.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(version, about = "A CA and a server certificate for 127.0.0.1 and localhost, signed by it")]
struct Cli {
    /// Directory to write ca.pem, server.pem and server.key into (created if missing).
    #[arg(long, value_name = "DIR", default_value = "target/cert")]
    out: PathBuf,
}

fn main() {
    let cli = Cli::parse();
    match lab_cert::make(&cli.out) {
        Ok(files) => {
            println!("CA:          {}", files.ca.display());
            println!("certificate: {}", files.cert.display());
            println!("key:         {}", files.key.display());
            println!(
                "serve: make run-epoll ARGS=\"--tls-cert {} --tls-key {}\"; then curl --cacert {} https://127.0.0.1:8080/",
                files.cert.display(),
                files.key.display(),
                files.ca.display()
            );
        }
        Err(e) => {
            eprintln!("lab-cert: {e}");
            std::process::exit(1);
        }
    }
}
