//! `geocache cert`: a CA and member certificates for a real cluster, through the same
//! certificate module as `geocache dev --secure` ([`crate::tls::cert`]). Prints the files it
//! wrote and the `serve` flags that use them; never prints key material.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::tls::cert;

/// Make the certificates mutual TLS between members needs.
#[derive(Subcommand, Debug)]
#[command(after_long_help = "\
A secure cluster, step by step:
  geocache cert ca --out ca/
  geocache cert node --ca ca/ --name node1 --san 10.0.0.1 --san node1.internal --out node1/
  (one `cert node` per member, naming every address other members dial it by)
  geocache serve --id 1 --listen 10.0.0.1:7001 --peer-listen 10.0.0.1:7101 \\
      --tls-cert node1/node1.pem --tls-key node1/node1-key.pem --tls-ca ca/ca.pem ...
Keep ca/ca-key.pem offline: whoever holds it can make members. Copy only ca/ca.pem to the nodes.")]
pub enum CertCommand {
    /// Make a cluster CA: DIR/ca.pem (give it to every node as --tls-ca) and DIR/ca-key.pem
    /// (mode 0600; keep it away from the nodes: whoever holds it can make members).
    Ca(CaArgs),
    /// Make a member certificate signed by the CA: DIR/NAME.pem and DIR/NAME-key.pem (mode
    /// 0600), for the node's --tls-cert and --tls-key.
    Node(NodeArgs),
}

#[derive(Args, Debug)]
pub struct CaArgs {
    /// Directory to write ca.pem and ca-key.pem into (created if missing; existing files are
    /// never replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "geocache cluster CA")]
    pub name: String,
    /// Days the CA is valid for.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
}

#[derive(Args, Debug)]
pub struct NodeArgs {
    /// Directory holding the CA's ca.pem and ca-key.pem (from `geocache cert ca`).
    #[arg(long)]
    pub ca: PathBuf,
    /// The node's name: its certificate's common name and the files' names (letters, digits,
    /// '.', '_', '-'), e.g. node1.
    #[arg(long)]
    pub name: String,
    /// An IP address or DNS name other members dial this node's peer listener by (its
    /// --peer-advertise host). Repeatable; at least one.
    #[arg(long = "san", required = true)]
    pub sans: Vec<String>,
    /// Directory to write NAME.pem and NAME-key.pem into (created if missing; existing files
    /// are never replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// Days the certificate is valid for.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

pub(super) fn run(command: CertCommand) -> i32 {
    match make(command) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("geocache cert: {e}");
            2
        }
    }
}

fn make(command: CertCommand) -> Result<(), crate::tls::TlsError> {
    match command {
        CertCommand::Ca(args) => {
            let ca = cert::new_ca(&args.name, args.days)?;
            let (cert_path, key_path) = cert::write_pair(&args.out, cert::CA_STEM, &ca)?;
            println!("CA certificate: {}  (every node's --tls-ca)", cert_path.display());
            println!("CA key:         {}  (mode 0600; keep it off the nodes)", key_path.display());
        }
        CertCommand::Node(args) => {
            let ca = cert::read_pair(&args.ca, cert::CA_STEM)?;
            let node = cert::new_member(&ca, &args.name, &args.sans, args.days)?;
            let (cert_path, key_path) = cert::write_pair(&args.out, &args.name, &node)?;
            let (ca_cert, _) = cert::paths(&args.ca, cert::CA_STEM);
            println!("node certificate: {}  (for {})", cert_path.display(), args.sans.join(", "));
            println!("node key:         {}  (mode 0600)", key_path.display());
            println!(
                "serve with: --tls-cert {} --tls-key {} --tls-ca {}",
                cert_path.display(),
                key_path.display(),
                ca_cert.display()
            );
        }
    }
    Ok(())
}
