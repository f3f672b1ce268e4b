//! The flags of `embed`, `compare`, `search` and `serve`.

use std::net::SocketAddr;
use std::path::PathBuf;

use siamese_common::cluster::protocol::auth::{TOKEN_ENV, TOKEN_FILE_ENV};
use siamese_common::cluster::protocol::tls::ServerTlsArgs;
use siamese_common::config::within;
use siamese_common::data::TestAugment;
use siamese_common::inference::Adapt;

/// The trained model and what may be done to images that do not fit it.
#[derive(clap::Args, Clone, Debug)]
pub struct ModelArgs {
    /// SN-LeNet-5 weights: a run's checkpoint (the .safetensors beside its results) or a
    /// weights-only file.
    #[arg(long, env = "SIAMESE_WEIGHTS")]
    pub weights: PathBuf,
    /// Resize images of another size to the model's input (bilinear); without it they are
    /// refused.
    #[arg(long)]
    pub resize: bool,
    /// Convert images to the model's channels (colour to grey, grey to colour, alpha dropped);
    /// without it they are refused.
    #[arg(long)]
    pub convert: bool,
    /// Compute threads, 1 to 1024 (default: all cores).
    #[arg(long, env = "SIAMESE_THREADS", value_parser = within(1usize, 1024))]
    pub threads: Option<usize>,
    /// How images are seen: none (as they are) or mirror (each embedding the mean of the
    /// image's and its left-right mirror's, as a run with --test-augment mirror is tested; for
    /// CIFAR-10 models, not digits).
    #[arg(long, value_enum, env = "SIAMESE_TEST_AUGMENT", default_value = "none")]
    pub test_augment: TestAugment,
}

impl ModelArgs {
    /// What may be done to images.
    pub fn adapt(&self) -> Adapt {
        Adapt {
            resize: self.resize,
            convert: self.convert,
        }
    }
}

/// `coordinator embed`.
#[derive(clap::Args, Clone, Debug)]
pub struct EmbedArgs {
    /// The model and what may be done to images.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Images: PNG or JPEG files, or a dataset file's images by index: FILE#7, FILE#0..16 (end
    /// excluded), FILE#3,5,9 (IDX image files, plain or .gz, and CIFAR-10 binary batches).
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Write the embeddings here: `.npy` (float32, images x width) or CSV (anything else; a
    /// row per image: input, e0, e1, ...). Default: CSV on stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `coordinator compare`.
#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    /// The model and what may be done to images.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The first image (a file, or FILE#INDEX of a dataset file).
    pub a: String,
    /// The second image.
    pub b: String,
}

/// `coordinator search`.
#[derive(clap::Args, Clone, Debug)]
pub struct SearchArgs {
    /// The model and what may be done to images.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folder of PNG and JPEG images to search through.
    #[arg(long)]
    pub gallery: PathBuf,
    /// The image to look for (a file, or FILE#INDEX of a dataset file).
    #[arg(long)]
    pub query: String,
    /// How many of the nearest images to list.
    #[arg(short = 'k', long = "top", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub k: u32,
}

/// `coordinator serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServeArgs {
    /// The model and what may be done to images.
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to serve on (0.0.0.0:50052 to take requests from other hosts).
    #[arg(long, env = "SIAMESE_SERVE_LISTEN", default_value = "127.0.0.1:50052")]
    pub listen: SocketAddr,
    /// Folder of PNG and JPEG images that Search looks through, embedded at start.
    #[arg(long, env = "SIAMESE_GALLERY")]
    pub gallery: Option<PathBuf>,
    /// The token every call must carry (authorization: Bearer TOKEN); prefer SIAMESE_TOKEN or
    /// --token-file, which `ps` does not show.
    #[arg(long, env = TOKEN_ENV, hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token (a mounted Secret, say), instead of --token.
    #[arg(long, env = TOKEN_FILE_ENV)]
    pub token_file: Option<PathBuf>,
    /// Serve without a token: anyone who reaches the address may call.
    #[arg(long)]
    pub no_auth: bool,
    /// The server's TLS flags (--tls-cert, --tls-key, --tls-client-ca).
    #[command(flatten)]
    pub tls: ServerTlsArgs,
    /// Most images one forward pass batches from concurrent requests.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_batch: u32,
    /// Seconds between HTTP/2 keepalive PINGs; a client that misses two is dropped.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub keepalive: u64,
    /// Write the bound address (host:port) to this file once serving (for scripts and tests).
    #[arg(long)]
    pub address_file: Option<PathBuf>,
}
