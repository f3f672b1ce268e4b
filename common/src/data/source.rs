//! Where each dataset is published, with the checksums its files must have.

use super::DatasetKind;

/// Environment variable that replaces the base URL of every source (a mirror).
pub const DATASET_URL_ENV: &str = "SIAMESE_DATASET_URL";

/// One file to fetch and its published md5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// File name, appended to the base URL and used on disk.
    pub name: String,
    /// Lower-case hex md5 the file must have.
    pub md5: String,
}

/// Where a dataset's files live and how to unpack them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// URL prefix, ending in '/'.
    pub base_url: String,
    /// Files to fetch.
    pub files: Vec<RemoteFile>,
    /// Whether each file is a .tar.gz to unpack into the folder and then delete.
    pub extract_tar_gz: bool,
}

impl Source {
    /// Same files and checksums, fetched from another base URL (a mirror).
    pub fn with_base_url(mut self, base_url: &str) -> Self {
        self.base_url = base_url.to_string();
        if !self.base_url.ends_with('/') {
            self.base_url.push('/');
        }
        self
    }

    /// Full URL of one file.
    pub fn url(&self, file: &RemoteFile) -> String {
        format!("{}{}", self.base_url, file.name)
    }
}

fn files<'a>(list: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vec<RemoteFile> {
    list.into_iter()
        .map(|(name, md5)| RemoteFile {
            name: name.to_string(),
            md5: md5.to_string(),
        })
        .collect()
}

/// The official download location and checksums of `kind`.
pub fn official_source(kind: DatasetKind) -> Source {
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    let (base_url, list, extract_tar_gz) = match kind {
        DatasetKind::Mnist => (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            files(names.into_iter().zip([
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ])),
            false,
        ),
        DatasetKind::FashionMnist => (
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            files(names.into_iter().zip([
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ])),
            false,
        ),
        DatasetKind::Cifar10 => (
            "https://www.cs.toronto.edu/~kriz/",
            files([("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530")]),
            true,
        ),
    };
    Source {
        base_url: base_url.to_string(),
        files: list,
        extract_tar_gz,
    }
}

/// The official source of `kind`, with its base URL replaced by `$SIAMESE_DATASET_URL` if set.
pub fn configured_source(kind: DatasetKind) -> Source {
    let source = official_source(kind);
    match std::env::var(DATASET_URL_ENV) {
        Ok(url) if !url.is_empty() => source.with_base_url(&url),
        _ => source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_sources_and_mirror_override() {
        let mnist = official_source(DatasetKind::Mnist);
        assert_eq!(mnist.files.len(), 4);
        assert_eq!(mnist.files[0].name, "train-images-idx3-ubyte.gz");
        assert_eq!(mnist.files[3].md5, "ec29112dd5afa0611ce80d1b7f02629c");
        let fashion = official_source(DatasetKind::FashionMnist);
        assert_eq!(fashion.files[1].md5, "25c81989df183df01b3e8a0aad5dffbe");
        let cifar = official_source(DatasetKind::Cifar10);
        assert!(cifar.extract_tar_gz);
        assert_eq!(
            cifar.url(&cifar.files[0]),
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
        );
        let mirror = mnist.clone().with_base_url("http://mirror.local/m");
        assert_eq!(
            mirror.url(&mirror.files[1]),
            "http://mirror.local/m/train-labels-idx1-ubyte.gz"
        );
        assert_eq!(mirror.files, mnist.files);
    }
}
