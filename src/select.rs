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
    for (f, sel) in info.files.iter().zip(selected) {
        if !*sel || f.pad {
            continue;
        }
        if let Some((first, last)) = g.pieces_of(f.offset, f.length) {
            for p in first..=last {
                wanted.set(p as usize);
            }
        }
    }
    wanted
}

/// Every piece of the `index`-th file (1-based, pad files skipped), in
/// order: what `--stream` needs first.
pub fn file_pieces(info: &Info, g: &Geometry, index: usize) -> Vec<u32> {
    info.files
        .iter()
        .filter(|f| !f.pad)
        .nth(index.saturating_sub(1))
        .and_then(|f| g.pieces_of(f.offset, f.length))
        .map_or_else(Vec::new, |(first, last)| (first..=last).collect())
}

/// The first and last piece of every non-empty file, in file order: what a
/// player reads first (headers, and indexes kept at the end).
pub fn file_end_pieces(info: &Info, g: &Geometry) -> Vec<u32> {
    let mut out = Vec::new();
    for f in info.files.iter().filter(|f| !f.pad) {
        let Some((first, last)) = g.pieces_of(f.offset, f.length) else {
            continue;
        };
        for p in [first, last] {
            // Files come in offset order, so a repeat can only be the last.
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
