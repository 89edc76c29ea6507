use super::*;

fn info(lens: &[(u64, bool)], piece_length: u32) -> (Info, Geometry) {
    crate::metainfo::synthetic_info(lens, piece_length)
}

#[test]
fn lists_parse_and_bad_ones_say_why() {
    assert_eq!(parse_list("1,3-5"), Ok(vec![1..=1, 3..=5]));
    assert_eq!(parse_list(" 2 , 7-7"), Ok(vec![2..=2, 7..=7]));
    for bad in ["", "0", "1,,2", "5-3", "a", "1-", "-2", "1.5"] {
        assert!(parse_list(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_list("0").unwrap_err().contains("numbered from 1"));
}

#[test]
fn selection_skips_pad_files_in_numbering_and_picks_pieces() {
    // Pieces of 10: f0 [0,15) pieces 0-1; pad [15,20); f2 [20,45) pieces 2-4.
    let (info, g) = info(&[(15, false), (5, true), (25, false)], 10);
    let only2 = selected_files(&info, &Selection::Only(vec![2..=2])).unwrap();
    assert_eq!(only2, vec![false, true, true]);
    let w = wanted_pieces(&info, &g, &only2);
    assert_eq!(w.iter_ones().collect::<Vec<_>>(), vec![2, 3, 4]);
    let but2 = selected_files(&info, &Selection::AllBut(vec![2..=2])).unwrap();
    assert_eq!(but2, vec![true, true, false]);
    let w = wanted_pieces(&info, &g, &but2);
    assert_eq!(w.iter_ones().collect::<Vec<_>>(), vec![0, 1]);
    let err = selected_files(&info, &Selection::Only(vec![3..=3])).unwrap_err();
    assert!(err.contains("no file 3") && err.contains("has 2"), "{err}");
}

#[test]
fn stream_and_sequential_piece_orders() {
    // Pieces of 10: f0 [0,15) pieces 0-1; pad; f2 [20,45) pieces 2-4;
    // f3 empty; f4 [45,50) piece 4.
    let (info, g) = info(
        &[(15, false), (5, true), (25, false), (0, false), (5, false)],
        10,
    );
    assert_eq!(file_pieces(&info, &g, 2), vec![2, 3, 4]);
    assert_eq!(file_pieces(&info, &g, 3), Vec::<u32>::new());
    assert_eq!(file_pieces(&info, &g, 9), Vec::<u32>::new());
    assert_eq!(file_end_pieces(&info, &g), vec![0, 1, 2, 4]);
    assert_eq!(g.pieces_of(45, 0), None);
}
