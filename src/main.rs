//! The `ragvault` command line: runs the service and the operator commands that act on the configured
//! database and key source. Only this binary uses `anyhow`; libraries return their own error enums.
#![allow(clippy::print_stdout)]

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ragvault_core::{
    ApiKeyId, Environment, OperatorKeyId, Scope, Scopes, TenantSlug, TenantStatus,
};
use ragvault_credentials::{operator_path, tenant_path, validate_provider_name, Secret};
use ragvault_gateway::{AccessControl, RequestContext};
use ragvault_server::config::DatabaseCredentials;
use ragvault_server::{open_key_source, open_store, open_store_with, Application, Settings};
use ragvault_store::Store;
use std::io::Read;
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroize;

/// glibc's malloc was ~15 % of the server's CPU under load (`perf`: `_int_malloc`, `malloc_consolidate`,
/// `free`, for the many small short-lived allocations of a request); mimalloc's per-thread free lists take
/// most of that away. See docs/performance.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "ragvault",
    version,
    about = "RAG backend that keeps provider keys and customer content inside its trust boundary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP service (migrations are applied at start).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage operator keys (for /v1/admin/*).
    #[command(subcommand, name = "admin-key")]
    AdminKey(AdminKeyCommand),
    /// Manage a tenant's API keys.
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCommand),
    /// Manage provider keys in the local keyring (with Vault, write them with `bao kv put`).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Ingest files or folders through the running service (RAGVAULT_URL, RAGVAULT_API_KEY).
    ///
    /// Folders are walked (hidden entries and files that are not documents left out); each document is
    /// named by its path under the folder. Unchanged files are recognised by the service and not embedded
    /// again, so running the same command again is cheap and resumes an interrupted run. Exits non-zero
    /// when a file was refused (each is listed with its reason); a full queue only makes it wait.
    Ingest {
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        /// The tenant the API key must belong to (a guard against ingesting into the wrong tenant).
        #[arg(long)]
        tenant: String,
        /// Delete the tenant's documents (under --prefix, if given) whose files are no longer there.
        #[arg(long)]
        prune: bool,
        /// Print nothing but the files that failed.
        #[arg(long, short)]
        quiet: bool,
        /// Uploads in flight at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
        concurrency: u16,
        /// Prepended to every document name, e.g. `manual/`: keeps several folders apart in one tenant,
        /// and limits what --prune may delete to names under it.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Ask a question through the running service (RAGVAULT_URL, RAGVAULT_API_KEY with scope `ask`).
    Ask {
        question: String,
        /// Print the answer as it is generated.
        #[arg(long)]
        stream: bool,
        /// Chunks to retrieve.
        #[arg(long)]
        top_k: Option<usize>,
    },
    /// Scan files or folders for credentials as ingest does (path, line and kind; never the value). Exits
    /// non-zero on a finding the allow list does not name.
    Scan {
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        /// A file of `<path> <kind>` lines to tolerate (test fixtures); `kind` may be `*`, a path ending in
        /// `/` covers a folder.
        #[arg(long)]
        allow: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the audit hash chain; exits non-zero naming the first bad sequence number.
    Verify,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Store a new version of a provider key, read from standard input (never from the command line).
    Set {
        provider: String,
        /// A tenant's own key for this provider, instead of the operator-wide one.
        #[arg(long, conflicts_with = "sandbox")]
        tenant: Option<String>,
        /// The key sandbox tenants use (never a production key).
        #[arg(long)]
        sandbox: bool,
        #[arg(long)]
        base_url: Option<String>,
        #[arg(long)]
        organization: Option<String>,
    },
    /// List provider key versions (never the keys).
    List,
    /// Revoke the current version of a provider key.
    Delete {
        provider: String,
        #[arg(long, conflicts_with = "sandbox")]
        tenant: Option<String>,
        #[arg(long)]
        sandbox: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its id and a first API key (shown once).
    Create {
        slug: String,
        /// Create a sandbox tenant instead of a production one.
        #[arg(long)]
        sandbox: bool,
    },
    /// List tenants.
    List,
    /// Refuse every credential of the tenant until resumed.
    Suspend { slug: String },
    /// Let a suspended tenant's credentials work again.
    Resume { slug: String },
}

#[derive(Subcommand)]
enum AdminKeyCommand {
    /// Create an operator key (shown once).
    Create {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Revoke an operator key by id.
    Revoke { key_id: String },
}

#[derive(Subcommand)]
enum ApiKeyCommand {
    /// Issue a key for a tenant with the given scopes (shown once).
    Create {
        #[arg(long)]
        tenant: String,
        /// ingest, ask, tokens or admin; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a tenant's keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: String,
    },
    /// Revoke one of a tenant's keys.
    Revoke {
        #[arg(long)]
        tenant: String,
        key_id: String,
    },
}

mod client;
mod ingest;
mod scan;

const CLI_ACTOR: &str = "cli";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("loading configuration")?;
    // Only the service exports traces; one-shot commands log and exit.
    let tracing = match cli.command {
        Command::Serve => settings.tracing.clone(),
        _ => Default::default(),
    };
    // Declared before the runtime, so dropped after it: lines logged while shutting down are written out.
    let (log_writer, _log_thread) = ragvault_server::telemetry::off_thread(std::io::stderr());
    let _trace_export = ragvault_server::telemetry::init(&settings.log, &tracing, log_writer)
        .context("starting trace export")?;
    ragvault_server::telemetry::install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> Result<()> {
    match command {
        Command::Serve => serve(settings).await,
        Command::Migrate => {
            let store = if settings.database.credentials == DatabaseCredentials::Vault {
                let key_source = open_key_source(&settings).await?;
                open_store_with(&settings, &key_source).await?.0
            } else {
                open_store(&settings)?
            };
            store.migrate().await.context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant(cmd) => tenant(cmd, &settings).await,
        Command::AdminKey(cmd) => admin_key(cmd, &settings).await,
        Command::ApiKey(cmd) => api_key(cmd, &settings).await,
        Command::Keys(cmd) => provider_keys(cmd, &settings).await,
        Command::Audit(AuditCommand::Verify) => verify_audit(&settings).await,
        Command::Ingest {
            paths,
            tenant,
            prune,
            quiet,
            concurrency,
            prefix,
        } => {
            ingest::run(ingest::Options {
                paths,
                tenant,
                prune,
                quiet,
                concurrency: usize::from(concurrency),
                prefix,
            })
            .await
        }
        Command::Ask {
            question,
            stream,
            top_k,
        } => client::ask(&question, stream, top_k).await,
        Command::Scan { paths, allow } => {
            if scan::run(&paths, allow.as_deref())? {
                Ok(())
            } else {
                bail!("credentials found outside the allow list (see above)")
            }
        }
    }
}

async fn serve(settings: Settings) -> Result<()> {
    tracing::info!(listen = %settings.listen, data_dir = %settings.data_dir.display(), "starting ragvault");
    let app = Application::build(settings)
        .await
        .context("starting the service")?;
    tracing::info!(address = %app.local_addr(), "listening");
    app.run_until(ragvault_server::shutdown_signal()).await?;
    Ok(())
}

/// The store (migrated) and access control for operator commands.
async fn operator_tools(settings: &Settings) -> Result<(Store, AccessControl)> {
    let key_source = open_key_source(settings).await?;
    // With leased database logins the CLI leases its own; it expires with its TTL.
    let (store, _lease) = open_store_with(settings, &key_source).await?;
    store.migrate().await.context("applying migrations")?;
    let access = AccessControl::new(store.clone(), std::sync::Arc::new(key_source));
    Ok((store, access))
}

fn cli_context() -> RequestContext {
    RequestContext::new(CLI_ACTOR, None)
}

fn expiry(days: Option<u32>) -> Option<OffsetDateTime> {
    days.map(|d| OffsetDateTime::now_utc() + Duration::from_secs(u64::from(d) * 86_400))
}

async fn tenant(cmd: TenantCommand, settings: &Settings) -> Result<()> {
    let (_, access) = operator_tools(settings).await?;
    match cmd {
        TenantCommand::Create { slug, sandbox } => {
            let slug = TenantSlug::parse(&slug)?;
            let environment = if sandbox {
                Environment::Sandbox
            } else {
                Environment::Production
            };
            let created = access
                .create_tenant(slug, environment, &cli_context())
                .await?;
            println!("tenant_id: {}", created.tenant.id);
            println!("slug: {}", created.tenant.slug);
            println!("environment: {}", created.tenant.environment.as_str());
            println!("api_key_id: {}", created.key.id);
            println!("api_key: {}", created.api_key.expose_secret());
            eprintln!("Store the API key now: it is shown only once.");
        }
        TenantCommand::List => {
            for t in access.list_tenants().await? {
                println!(
                    "{}\t{}\t{}\t{}",
                    t.id,
                    t.slug,
                    t.environment.as_str(),
                    t.status.as_str()
                );
            }
        }
        TenantCommand::Suspend { slug } => {
            let t = access.get_tenant_by_slug(&slug).await?;
            access
                .set_tenant_status(t.id, TenantStatus::Suspended, &cli_context())
                .await?;
            println!("tenant {slug} suspended");
        }
        TenantCommand::Resume { slug } => {
            let t = access.get_tenant_by_slug(&slug).await?;
            access
                .set_tenant_status(t.id, TenantStatus::Active, &cli_context())
                .await?;
            println!("tenant {slug} resumed");
        }
    }
    Ok(())
}

async fn verify_audit(settings: &Settings) -> Result<()> {
    let (store, _) = operator_tools(settings).await?;
    let verification = store.verify_audit_chain().await?;
    match (verification.first_bad_seq, verification.problem) {
        (Some(seq), Some(problem)) => bail!(
            "audit chain broken at sequence number {seq} ({problem:?}); {} events before it are intact",
            verification.checked
        ),
        _ => {
            println!(
                "audit chain intact: {} events, head at sequence number {}",
                verification.checked, verification.head_seq
            );
            Ok(())
        }
    }
}

async fn admin_key(cmd: AdminKeyCommand, settings: &Settings) -> Result<()> {
    let (_, access) = operator_tools(settings).await?;
    match cmd {
        AdminKeyCommand::Create {
            name,
            expires_in_days,
        } => {
            let issued = access
                .create_operator_key(name, expiry(expires_in_days), &cli_context())
                .await?;
            println!("operator_key_id: {}", issued.id);
            println!("api_key: {}", issued.api_key.expose_secret());
            eprintln!("Store the operator key now: it is shown only once.");
        }
        AdminKeyCommand::Revoke { key_id } => {
            let id: OperatorKeyId = key_id.parse().context("key id must be a UUID")?;
            if !access.revoke_operator_key(id, &cli_context()).await? {
                bail!("no operator key with id {id}");
            }
            println!("operator key {id} revoked");
        }
    }
    Ok(())
}

async fn api_key(cmd: ApiKeyCommand, settings: &Settings) -> Result<()> {
    let (store, access) = operator_tools(settings).await?;
    match cmd {
        ApiKeyCommand::Create {
            tenant,
            scopes,
            name,
            expires_in_days,
        } => {
            let t = access.get_tenant_by_slug(&tenant).await?;
            let scopes: Scopes = scopes
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<_, _>>()?;
            let issued = access
                .issue_api_key(
                    t.id,
                    scopes,
                    name,
                    expiry(expires_in_days),
                    None,
                    &cli_context(),
                )
                .await?;
            println!("api_key_id: {}", issued.key.id);
            println!("scopes: {}", issued.key.scopes.names().join(","));
            println!("api_key: {}", issued.api_key.expose_secret());
            eprintln!("Store the API key now: it is shown only once.");
        }
        ApiKeyCommand::List { tenant } => {
            let t = access.get_tenant_by_slug(&tenant).await?;
            for k in store.list_api_keys(t.id).await? {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!(
                    "{}\trvk_{}_…\t{}\t{}\t{}",
                    k.id,
                    k.public_id,
                    k.scopes.names().join(","),
                    state,
                    k.name.unwrap_or_default()
                );
            }
        }
        ApiKeyCommand::Revoke { tenant, key_id } => {
            let t = access.get_tenant_by_slug(&tenant).await?;
            let id: ApiKeyId = key_id.parse().context("key id must be a UUID")?;
            access.revoke_api_key(t.id, id, &cli_context()).await?;
            println!("api key {id} revoked");
        }
    }
    Ok(())
}

/// The KV path of a provider key, resolving a tenant slug to its id.
async fn provider_key_path(
    settings: &Settings,
    provider: &str,
    tenant: Option<String>,
    sandbox: bool,
) -> Result<String> {
    validate_provider_name(provider)?;
    Ok(match tenant {
        None if sandbox => ragvault_credentials::sandbox_path(provider),
        None => operator_path(provider),
        Some(slug) => {
            let (_, access) = operator_tools(settings).await?;
            let tenant = access
                .get_tenant_by_slug(&slug)
                .await
                .context("looking up the tenant")?;
            tenant_path(tenant.id, provider)
        }
    })
}

async fn provider_keys(cmd: KeysCommand, settings: &Settings) -> Result<()> {
    let source = open_key_source(settings).await?;
    let Some(keyring) = source.sealed_keyring() else {
        bail!(
            "provider keys live in Vault with credentials.backend = \"vault\"; write them there, e.g. \
             `bao kv put -mount={} ragvault/providers/PROVIDER api_key=-` (reads the key from stdin)",
            settings.vault.kv_mount
        );
    };
    match cmd {
        KeysCommand::Set {
            provider,
            tenant,
            sandbox,
            base_url,
            organization,
        } => {
            let path = provider_key_path(settings, &provider, tenant, sandbox).await?;
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the key from stdin")?;
            let key = Secret::new(input.trim().to_owned());
            input.zeroize();
            if key.expose_secret().is_empty() {
                bail!("no key on standard input: pipe it in, e.g. `ragvault keys set {provider} < key.txt`");
            }
            let version = keyring.set(&path, &key, base_url, organization)?;
            println!("{path}: version {version} stored");
        }
        KeysCommand::List => {
            for v in keyring.list()? {
                let state = if v.deleted {
                    "deleted"
                } else if v.current {
                    "current"
                } else {
                    "old"
                };
                println!("{}\tv{}\t{}\t{}", v.path, v.version, v.created_at, state);
            }
        }
        KeysCommand::Delete {
            provider,
            tenant,
            sandbox,
        } => {
            let path = provider_key_path(settings, &provider, tenant, sandbox).await?;
            match keyring.delete_current(&path)? {
                Some(version) => println!("{path}: version {version} deleted"),
                None => bail!("no key stored at {path}"),
            }
        }
    }
    Ok(())
}
