//! `--select` and `--exclude`: which files to download, by the numbers
//! `btc info` shows (1-based, pad files not counted). Pure.

use crate::geometry::Geometry;
use crate::metainfo::Info;
use std::ops::RangeInclusive;

/// A file selection as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Only these files.
    Only(Vec<RangeInclusive<usize>>),
    /// Every file but these.
    AllBut(Vec<RangeInclusive<usize>>),
}

/// A parsed `--select`/`--exclude` list (one value for clap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileList(pub Vec<RangeInclusive<usize>>);

/// [`parse_list`] for clap.
pub fn parse_file_list(text: &str) -> Result<FileList, String> {
    parse_list(text).map(FileList)
}

/// Parses `1,3-5,8` into ranges of file numbers (each at least 1).
pub fn parse_list(text: &str) -> Result<Vec<RangeInclusive<usize>>, String> {
    let bad = |why: &str| format!("`{text}`: {why} (expected numbers and ranges such as 1,3-5)");
    let mut out = Vec::new();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("an empty item"));
        }
        let num = |s: &str| -> Result<usize, String> {
            match s.trim().parse::<usize>() {
                Ok(0) => Err(bad("files are numbered from 1")),
                Ok(n) => Ok(n),
                Err(_) => Err(bad(&format!("`{s}` is not a file number"))),
            }
        };
        let range = match item.split_once('-') {
            Some((a, b)) => num(a)?..=num(b)?,
            None => {
                let n = num(item)?;
                n..=n
            }
        };
        if range.start() > range.end() {
            return Err(bad(&format!("the range {item} runs backwards")));
        }
        out.push(range);
    }
    Ok(out)
}

/// Which of `info`'s files (torrent order, pad files included and marked
/// selected) are selected; an error names a number past the last file.
pub fn selected_files(info: &Info, sel: &Selection) -> Result<Vec<bool>, String> {
    let count = info.files.iter().filter(|f| !f.pad).count();
    let (ranges, only) = match sel {
        Selection::Only(r) => (r, true),
        Selection::AllBut(r) => (r, false),
    };
    if let Some(r) = ranges.iter().find(|r| *r.end() > count) {
        return Err(format!(
            "there is no file {}: the torrent has {count} (see `btc info`)",
            r.end()
        ));
    }
    let mut number = 0;
    Ok(info
        .files
        .iter()
        .map(|f| {
            if f.pad {
                return true;
            }
            number += 1;
            ranges.iter().any(|r| r.contains(&number)) == only
        })
        .collect())
}

/// The pieces holding any byte of a selected, non-empty, non-pad file.
pub fn wanted_pieces(info: &Info, g: &Geometry, selected: &[bool]) -> crate::bitfield::Bitfield {
    let mut wanted = crate::bitfield::Bitfield::new(g.piece_count as usize);
    let pl = u64::from(g.piece_length.max(1));
    for (f, sel) in info.files.iter().zip(selected) {
        if !*sel || f.pad || f.length == 0 {
            continue;
        }
        for p in f.offset / pl..=(f.offset + f.length - 1) / pl {
            wanted.set(p as usize);
        }
    }
    wanted
}

#[cfg(test)]
mod tests;
