"""Features: ``hierloc extract`` (pooled features or tokens) and ``hierloc semantic`` (maps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hierloc.cli.app import (
    OutputFormat,
    VerboseOpt,
    app,
    handles_errors,
    row_progress,
)
from hierloc.cli.options import (
    ResumeOverwriteOpt,
    RootOpt,
    SummaryFormatOpt,
    echo_summary,
)


@app.command()
@handles_errors
def extract(
    sources: Annotated[
        list[Path],
        typer.Argument(
            help="Image folders (recursive), .zip archives or folders of them (OSV5M's "
            "images/{train,test}/NN.zip), WebDataset .tar shards, or a CSV/Parquet metadata "
            "file with id and path columns.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Feature store folder.", show_default=False)
    ],
    encoder: Annotated[
        str,
        typer.Option(
            help="Image encoder: efficientnet-lite0, efficientnet-lite2, hf:<repo-or-path>, "
            "timm:<name>, open_clip:<arch>:<pretrained>."
        ),
    ] = "efficientnet-lite0",
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 64,
    workers: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="DataLoader processes decoding images (default: half the "
            "cores, 1–8; 0 decodes in the main process).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, mps …")] = "cpu",
    commit_every: Annotated[
        int, typer.Option(min=1, help="Batches between commits (resume points).")
    ] = 16,
    id_column: Annotated[str, typer.Option(help="Id column of a metadata source.")] = "id",
    path_column: Annotated[
        str, typer.Option(help="Image path column of a metadata source.")
    ] = "path",
    root: RootOpt = None,
    overwrite: ResumeOverwriteOpt = False,
    tokens: Annotated[
        bool,
        typer.Option(
            "--tokens",
            help="Store the encoder's tokens (patch grid, + CLS for ViTs; T·C values per image) "
            "instead of pooled features: GeoSURGE's RGB stream (hierloc train --model geosurge).",
        ),
    ] = False,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Extract frozen-encoder features into a resumable feature store.

    Writes features.npy (float16), ids.parquet and manifest.json (encoder name, version and preprocessing, dim, rows committed). Resumable: kill it at any moment and rerun the same command; the store ends with every image exactly once and committed rows never change. Bad images (empty, truncated, corrupt, not an image, over 64 megapixels) go to rejects.csv with their reason; grayscale, CMYK and alpha images are converted and EXIF orientation is applied.
    """  # noqa: E501
    from hierloc.data.extract import extract as run

    with row_progress("extracting") as update:
        summary = run(
            sources,
            output,
            encoder=encoder,
            batch_size=batch_size,
            workers=workers,
            device=device,
            commit_every=commit_every,
            overwrite=overwrite,
            id_column=id_column,
            path_column=path_column,
            root=root,
            progress=lambda done, total: update(done),
            tokens=tokens,
        )
    echo_summary(summary, fmt)


@app.command()
@handles_errors
def semantic(
    metadata: Annotated[
        Path,
        typer.Argument(
            help="CSV/Parquet metadata file with an id column and the provider's "
            "column (map paths, or image paths for oneformer).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Semantic store folder.", show_default=False)
    ],
    provider: Annotated[
        str,
        typer.Option(
            help="bluemarble (the offline benchmark's maps), files (your own class "
            "maps), oneformer (ADE20K segmentation of the images; needs its weights)."
        ),
    ] = "bluemarble",
    size: Annotated[
        int,
        typer.Option(
            help="Map side in pixels (nearest-neighbour resize): the backbone's patch "
            "grid × GeoSURGE's semantic patch, e.g. 224 = 7 × 32 for efficientnet-lite0 "
            "or 14 × 16 for a ViT-B/16."
        ),
    ] = 224,
    classes: Annotated[
        str | None,
        typer.Option(
            help="files provider: class names 'sky,road,…' (id = position) or a count.",
            show_default=False,
        ),
    ] = None,
    column: Annotated[
        str, typer.Option(help="files provider: the column of map paths.")
    ] = "semantic_path",
    model: Annotated[
        str | None,
        typer.Option(
            help="oneformer provider: a local folder or hub id (default: "
            "shi-labs/oneformer_ade20k_swin_tiny).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="oneformer provider: cpu, cuda …")] = "cpu",
    encoder: Annotated[
        str,
        typer.Option(
            help="The image encoder of the token store (hierloc extract --tokens --encoder): "
            "each map is cut as it cuts its images (resize, centre crop), so that map cell "
            "(i, j) lies under token (i, j)."
        ),
    ] = "efficientnet-lite0",
    root: RootOpt = None,
    overwrite: ResumeOverwriteOpt = False,
    fmt: SummaryFormatOpt = OutputFormat.table,
    verbose: VerboseOpt = False,
) -> None:
    """Precompute semantic maps (class per pixel) for GeoSURGE into a resumable store.

    One uint8 map of SIZE × SIZE per image, in a feature-store folder (features.npy, ids.parquet, manifest.json naming the provider, its classes and the size). Maps that cannot be made (unreadable, an RGB image instead of class ids, class ids beyond the classes) go to rejects.csv with their reason. Kill and rerun to resume.
    """  # noqa: E501
    from hierloc.data.semantic import build_semantic_store, parse_classes
    from hierloc.encoders import create_image_encoder

    crop = create_image_encoder(encoder).preprocess
    with row_progress("semantic maps") as update:
        summary = build_semantic_store(
            metadata,
            output,
            provider,
            size=size,
            root=root,
            overwrite=overwrite,
            progress=lambda done, total: update(done),
            classes=parse_classes(classes),
            column=column,
            model=model,
            device=device,
            crop=crop,
        )
    echo_summary(summary, fmt)
