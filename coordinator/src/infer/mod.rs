//! Using a trained checkpoint from the command line: `embed`, `compare`, `search` and `serve`.
//! The library does the work (`siamese_common::inference`); this module reads the flags and
//! prints the answers.

mod args;
mod embeddings_file;

use std::sync::Arc;
use std::time::Duration;

pub use args::{CompareArgs, EmbedArgs, ModelArgs, SearchArgs, ServeArgs};

use siamese_common::cluster::protocol::auth::{TOKEN_ENV, resolve_token};
use siamese_common::cluster::protocol::tls::ServerTls;
use siamese_common::inference::{
    Batcher, Gallery, InferenceService, Input, Pixels, ServeOptions, THRESHOLD, TrainedModel,
    load_inputs, serve_blocking,
};
use siamese_common::stop::StopFlag;
use siamese_common::train::output_files::{OutputFile, check_output_files};

/// The model and the inputs' images, each named.
fn model_and_inputs(
    model: &ModelArgs,
    inputs: &[String],
) -> anyhow::Result<(TrainedModel, Vec<(String, Pixels)>)> {
    let m = TrainedModel::load(&model.weights)?.with_views(model.test_augment);
    let parsed = inputs
        .iter()
        .map(|s| Input::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let images = load_inputs(&parsed, m.input_shape(), model.adapt())?;
    Ok((m, images))
}

/// Embeds the inputs and writes them as CSV (stdout or --out) or `.npy`.
pub fn run_embed(args: EmbedArgs) -> anyhow::Result<()> {
    let (model, images) = model_and_inputs(&args.model, &args.inputs)?;
    let (names, pixels): (Vec<String>, Vec<Pixels>) = images.into_iter().unzip();
    let values = model.embed(&pixels)?;
    let width = model.width();
    match &args.out {
        Some(path) => {
            embeddings_file::write_file(path, &names, &values, width)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            eprintln!(
                "{} embeddings of width {width} written to {} (rows in input order)",
                names.len(),
                path.display()
            );
        }
        None => embeddings_file::write_csv(&mut std::io::stdout().lock(), &names, &values, width)?,
    }
    Ok(())
}

/// Prints the similarity of two images and whether the model calls them the same class.
pub fn run_compare(args: CompareArgs) -> anyhow::Result<()> {
    let inputs = [args.a.clone(), args.b.clone()];
    let (model, images) = model_and_inputs(&args.model, &inputs)?;
    let [(name_a, a), (name_b, b)] = <[_; 2]>::try_from(images).map_err(|v: Vec<_>| {
        anyhow::anyhow!("compare takes two images; the inputs name {}", v.len())
    })?;
    let e = model.embed(&[a, b])?;
    let (ea, eb) = e.split_at(model.width());
    let (similarity, distance) = model.compare(ea, eb);
    let verdict = if similarity > THRESHOLD {
        "same"
    } else {
        "different"
    };
    println!(
        "{name_a} vs {name_b}: similarity {similarity:.4}  distance {distance:.4}  {verdict} (threshold {THRESHOLD})"
    );
    Ok(())
}

/// Prints the gallery images nearest to the query.
pub fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    let (model, images) = model_and_inputs(&args.model, std::slice::from_ref(&args.query))?;
    let Some((name, query)) = images.into_iter().next() else {
        anyhow::bail!("--query {} names no image", args.query);
    };
    let gallery = Gallery::load(&args.gallery, &model, args.model.adapt())?;
    let e = model.embed(&[query])?;
    let matches = gallery.search(&model, &e, args.k as usize);
    println!(
        "nearest to {name} among {} images of {}:",
        gallery.len(),
        args.gallery.display()
    );
    println!("rank  distance  similarity  image");
    for (i, m) in matches.iter().enumerate() {
        println!(
            "{:>4}  {:>8.4}  {:>10.4}  {}",
            i + 1,
            m.distance,
            m.similarity,
            m.name
        );
    }
    Ok(())
}

/// Serves the model over gRPC until SIGTERM or SIGINT.
pub fn run_serve(args: ServeArgs, threads: usize, stop: &StopFlag) -> anyhow::Result<()> {
    let token = resolve_token(args.token.as_deref(), args.token_file.as_deref())?;
    let token = match (token, args.no_auth) {
        (Some(_), true) => anyhow::bail!("--no-auth serves without a token: give no token with it"),
        (Some(t), false) => Some(t),
        (None, true) => None,
        (None, false) => anyhow::bail!(
            "serve needs a token every client must send: {TOKEN_ENV}, --token-file or --token (or --no-auth for an open service)"
        ),
    };
    // Certificates and the address file are checked before the model and gallery take their
    // time.
    let tls = ServerTls::from_args(&args.tls)?;
    if let Some(path) = &args.address_file {
        check_output_files(&[OutputFile::new("--address-file", path.clone())])?;
    }
    let model =
        Arc::new(TrainedModel::load(&args.model.weights)?.with_views(args.model.test_augment));
    let gallery = match &args.gallery {
        Some(dir) => {
            let g = Gallery::load(dir, &model, args.model.adapt())?;
            tracing::info!(images = g.len(), dir = %dir.display(), "gallery embedded");
            Some(Arc::new(g))
        }
        None => None,
    };
    let shape = model.input_shape();
    tracing::info!(
        weights = %model.path().display(),
        channels = shape.channels,
        height = shape.height,
        width = shape.width,
        embedding = model.width(),
        "model loaded"
    );
    let batcher = Batcher::start(model.clone(), threads, args.max_batch as usize)?;
    let service = InferenceService::new(model, batcher, gallery, args.model.adapt());
    let opts = ServeOptions {
        listen: args.listen,
        token,
        keepalive: Duration::from_secs(args.keepalive),
        address_file: args.address_file,
        io_threads: threads,
        tls,
    };
    serve_blocking(opts, service, stop)?;
    Ok(())
}
