"""``mmrun report RUN [RUN ...] [--out report.html]``."""

from __future__ import annotations

from mm_core.cli.main import command_parser


def main(argv: list[str]) -> int:
    parser = command_parser(
        "report",
        "Plot a run's curves (loss and its terms, lr, samples/s, every evaluation metric) as PNGs and write "
        "one self-contained HTML page with the config summary, the metrics table (best checkpoint marked), "
        "the plots and a gallery of evaluation samples. Works on runs still going. Several runs are overlaid.",
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run directories (run.output_dir)")
    parser.add_argument("--out", help="the HTML file (default: RUN/report/report.html for one run, "
                        "./report/report.html for several); PNGs go to <out stem>_plots/ beside it")
    parser.add_argument("--gallery", type=int, default=None, metavar="N",
                        help="show the N best and N worst samples of each split (default 8)")
    parser.add_argument("--images-root", metavar="DIR",
                        help="where the dataset images are now, when they moved since the run")
    parser.add_argument("--no-score", action="store_true",
                        help="do not rank samples (no per-sample score computed)")
    parser.add_argument("--no-plots", action="store_true", help="leave the plots out (a quicker page)")
    args = parser.parse_args(argv)

    from mm_report.build import DEFAULT_GALLERY_SIZE, write_report

    report = write_report(args.runs, out=args.out, images_root=args.images_root, score=not args.no_score, plots=not args.no_plots,
                          gallery_size=args.gallery if args.gallery is not None else DEFAULT_GALLERY_SIZE)
    for note in report.notes:
        print(f"note: {note}")
    if report.plots_manifest is not None:
        print(f"plots: {len(report.plots)} PNG(s) in {report.plots_manifest.parent}")
    print(f"report: {report.html}")
    return 0
