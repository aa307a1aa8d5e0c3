import numpy as np
import pytest
from PIL import Image

from clipsql.embed import ClipEmbedder, embed_photos
from clipsql.errors import BadArgument, ModelError
from conftest import jpeg_bytes


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(40):
        path = folder / f"p{i}.jpg"
        path.write_bytes(jpeg_bytes(i, size=(64 + i, 48)))
        paths.append((f"p{i}", path))
    return paths


def run(embedder, items, batch_size):
    batches = list(embed_photos(items, embedder, batch_size=batch_size, progress=False))
    ids = [i for b in batches for i in b.photo_ids]
    vectors = np.concatenate([b.embeddings for b in batches])
    return ids, vectors, [f for b in batches for f in b.failures]


def test_vectors_are_512_float32_unit_norm_and_deterministic(embedder, image_files):
    ids, vectors, failures = run(embedder, image_files, 32)
    assert ids == [pid for pid, _ in image_files] and failures == []
    assert vectors.shape == (40, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    _, again, _ = run(embedder, image_files, 32)
    np.testing.assert_array_equal(vectors, again)
    assert np.unique(vectors.round(5), axis=0).shape[0] == 40  # distinct images, distinct vectors


def test_batch_size_does_not_change_vectors(embedder, image_files):
    _, by_one, _ = run(embedder, image_files[:33], 1)
    _, by_32, _ = run(embedder, image_files[:33], 32)
    np.testing.assert_allclose(by_one, by_32, atol=1e-5)


def test_undecodable_cached_file_is_a_failure_not_a_crash(embedder, image_files, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes(1)[:300])
    items = [image_files[0], ("broken", broken), ("gone", tmp_path / "gone.jpg"), image_files[1]]
    ids, vectors, failures = run(embedder, items, 2)
    assert ids == ["p0", "p1"] and vectors.shape == (2, 512)
    assert [(f[0], f[1]) for f in failures] == [("broken", "undecodable"), ("gone", "no_file")]


def test_text_and_image_embeddings_share_the_space(embedder):
    texts = embedder.embed_texts(["a dog on a beach", "a red car", ""])
    assert texts.shape == (3, 512) and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(texts[0], embedder.embed_texts(["a dog on a beach"])[0], atol=1e-5)  # padding only
    long = embedder.embed_texts(["surfing " * 2000])  # cut to the 77-token window, not an error
    assert long.shape == (1, 512)
    images = embedder.embed_images([Image.new("L", (50, 50), 128)])
    assert images.shape == (1, 512)


def test_bad_model_and_arguments_are_clear_errors(tmp_path, embedder):
    with pytest.raises(ModelError, match="does not exist"):
        ClipEmbedder(str(tmp_path / "no-such-model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="config.json"):
        ClipEmbedder(str(tmp_path / "empty"))
    with pytest.raises(BadArgument, match="batch_size"):
        list(embed_photos([], embedder, batch_size=0))
    with pytest.raises(BadArgument, match="device"):
        ClipEmbedder("x", device="tpu")


def test_decode_worker_processes_give_the_same_batches_failures_and_order(embedder, image_files, tmp_path):
    # What a GPU's decode pool does (decode_workers_for a CUDA device), run here on the CPU.
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes(1)[:300])
    items = [*image_files[:10], ("broken", broken), ("gone", tmp_path / "gone.jpg"), *image_files[10:25]]
    in_thread = list(embed_photos(items, embedder, batch_size=8, progress=False, decode_workers=0))
    in_workers = list(embed_photos(items, embedder, batch_size=8, progress=False, decode_workers=2))
    assert [b.photo_ids for b in in_workers] == [b.photo_ids for b in in_thread]
    assert [[f[:2] for f in b.failures] for b in in_workers] == [[f[:2] for f in b.failures] for b in in_thread]
    assert [f[:2] for b in in_workers for f in b.failures] == [("broken", "undecodable"), ("gone", "no_file")]
    np.testing.assert_array_equal(
        np.concatenate([b.embeddings for b in in_workers]), np.concatenate([b.embeddings for b in in_thread])
    )
    # A batch larger than a worker's job is decoded in pieces by several workers and joined.
    from clipsql.embed import DECODE_JOB_PHOTOS

    items = [*image_files[:20], ("broken", broken), *image_files[20:]]
    size = DECODE_JOB_PHOTOS + 4
    in_thread = list(embed_photos(items, embedder, batch_size=size, progress=False, decode_workers=0))
    in_workers = list(embed_photos(items, embedder, batch_size=size, progress=False, decode_workers=2))
    assert [len(b.photo_ids) + len(b.failures) for b in in_workers] == [size, len(items) - size]
    assert [(b.photo_ids, [f[:2] for f in b.failures]) for b in in_workers] == [
        (b.photo_ids, [f[:2] for f in b.failures]) for b in in_thread
    ]
    np.testing.assert_array_equal(
        np.concatenate([b.embeddings for b in in_workers]), np.concatenate([b.embeddings for b in in_thread])
    )
    # A caller that stops early stops the workers too (no process left behind).
    first = embed_photos(items, embedder, batch_size=4, progress=False, decode_workers=2)
    next(first)
    first.close()
    with pytest.raises(BadArgument, match="decode_workers"):
        list(embed_photos(items, embedder, decode_workers=-1))


def test_the_batch_size_and_decode_pool_are_chosen_for_the_device():
    from clipsql.embed import DEFAULT_BATCH_SIZE, batch_size_for, decode_workers_for

    assert batch_size_for("cpu") == DEFAULT_BATCH_SIZE and decode_workers_for("cpu") == 0
    assert batch_size_for("mps") == 64 and 1 <= decode_workers_for("cuda") <= 16


def test_decode_workers_unpickle_the_preprocessor_without_importing_anything(embedder, tmp_path):
    # Each chunk's decode workers fork from a server that imported ImagePreprocessor.modules;
    # a module missing from that list is imported again by every worker of every chunk
    # (CLIP's processing modules: 2.9 s per chunk).
    import pickle
    import subprocess
    import sys

    from clipsql.embed import decode_server_modules

    preprocessor = embedder.image_preprocessor
    (tmp_path / "pre.pkl").write_bytes(pickle.dumps(preprocessor))
    preload = decode_server_modules(preprocessor)
    script = (
        "import importlib, pickle, sys\n"
        f"for m in {preload!r}: importlib.import_module(m)\n"
        "before = set(sys.modules)\n"
        f"pickle.loads(open({str(tmp_path / 'pre.pkl')!r}, 'rb').read())\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith(('transformers', 'tokenizers'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_workers_that_only_decode_give_the_inputs_that_preprocessing_workers_give(embedder, image_files, tmp_path):
    # On CUDA with torchvision, workers only decode and pack each job's images into one
    # tensor; the main process unpacks them and the image processor runs on the GPU. Here the
    # same path runs with the CPU as the device: the inputs must equal the workers' own.
    from clipsql.embed import _batches_in_workers

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(jpeg_bytes(1)[:300])
    items = [*image_files[:15], ("broken", broken), *image_files[15:]]
    preprocessor = embedder.image_preprocessor
    args = (items, preprocessor, 36, embedder.decode_side, 2)
    decoded = list(_batches_in_workers(*args, pin_memory=False, preprocess_on="cpu"))
    preprocessed = list(_batches_in_workers(*args, pin_memory=False))
    assert [b[0] for b in decoded] == [b[0] for b in preprocessed] and len(decoded) == 2
    assert [b[2] for b in decoded] == [b[2] for b in preprocessed] and decoded[0][2][0][:2] == ("broken", "undecodable")
    for (_, pixels, *_), (_, expected, *_) in zip(decoded, preprocessed):
        assert pixels.keys() == expected.keys()
        for key in pixels:
            np.testing.assert_array_equal(pixels[key].numpy(), expected[key].numpy())
