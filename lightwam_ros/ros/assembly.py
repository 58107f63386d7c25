"""Loading a policy and assembling its controller: what configure does, as plain functions.

Why here and not in the node: offline replay and the simulated-clock tests must load the bundle,
check it against the profile, warm the model up and build the controller exactly as the node does
at configure -- calling these functions is how they do it, without a ROS node or any patching.

- ``load_policy(config, log) -> LoadedPolicy``: bundle (sha256-verified), the profile checked
  against it, the PolicyPipeline on the configured backend/device/dtype, the online text encoder
  (text.encoder umt5), one warm-up inference, and the startup latency advice.
- ``build_controller(loaded, pool, clocks, log, name, topics) -> PolicyController``.
- ``inference_pool(loaded) -> InferencePool``: the worker threads that run ``pipeline.predict``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightwam_ros import config as cfgmod
from lightwam_ros.config import PolicyConfig
from lightwam_ros.control.controller import Clocks, Log, ModelInfo, PolicyController, Pool, Topics, inference_workers
from lightwam_ros.control.latency_advice import startup_advice
from lightwam_ros.ros.compressed import CompressedDecoder
from lightwam_ros.types import FrameSet


@dataclass
class LoadedPolicy:
    """A loaded, warmed-up policy and what configure learned about it."""

    config: PolicyConfig
    info: cfgmod.BundleInfo
    pipeline: Any  # PolicyPipeline (typed loosely: importing it pulls in torch)
    text_encoder: Any  # OnlineTextEncoder | None
    warm_ms: float  # one warm-up inference (NaN if it could not be measured)
    workers: int  # inference requests that run at once (chunk.max_inflight capped by the backend)

    def predict(self, frames: FrameSet) -> Any:
        return self.pipeline.predict(frames.images, frames.state, frames.instruction, frames.stamp_ns)

    def canvas_for(self, stamp_ns: int) -> Any:
        """The tiled model input of the request observed at ``stamp_ns``, else the latest one."""
        canvas = self.pipeline.canvas_for(stamp_ns)
        return canvas if canvas is not None else self.pipeline.last_canvas

    def compressed_decoder(self) -> CompressedDecoder:
        """A decoder for this policy's compressed cameras (one per decoding thread); with
        cameras.jpeg_decode reduced, JPEG frames at half size where the layout halves the camera."""
        halved = self.pipeline.embodiment.layout.pre_resize_hw if self.config.cameras.jpeg_decode == "reduced" else {}
        return CompressedDecoder(halved)

    def model_info(self) -> ModelInfo:
        from lightwam_ros.model.dtypes import dtype_name  # torch: loaded with the model, not on import

        p = self.pipeline
        return ModelInfo(backend=p.backend.name, device=str(p.device), dtype=dtype_name(p.backend.dtype), dt_ns=p.dt_ns)

    def close(self, text_wait_s: float = 10.0) -> None:
        """Release the text encoder and the model (device memory)."""
        if self.text_encoder is not None:
            self.text_encoder.close(text_wait_s)
        self.pipeline.close()


def load_policy(config: PolicyConfig, log: Log) -> LoadedPolicy:
    """configure's model part (see the module doc). Errors name the parameter or file."""
    from lightwam_ros.bundle.format import Bundle  # torch-heavy imports only when configuring
    from lightwam_ros.inference.pipeline import PolicyPipeline

    path = cfgmod.resolve_bundle_path(config.bundle)
    bundle = Bundle.load(path, verify=True)  # sha256 of every file, shapes, dims
    emb = bundle.embodiment
    info = cfgmod.BundleInfo(tuple(emb.cameras), tuple(emb.state_names), tuple(emb.action_names),
                             int(emb.trained_steps), emb.action_rate_hz)
    for warning in cfgmod.validate_against_bundle(config, info):
        log.warning(warning)
    steps = min(info.trained_steps, bundle.model_config.horizon)  # never compute unexecutable rows
    pipeline = PolicyPipeline.from_bundle(bundle, backend=config.backend.value, device=config.device,
                                          dtype=config.dtype.value, steps=steps,
                                          text_cache_dir=config.text.cache_dir or None)
    text_encoder = None
    try:
        text_encoder = _text_encoder(config, pipeline)
        warm_ms = pipeline.warmup(runs=1)
        log.info(f"warm-up: {warm_ms:.1f} ms per inference")
        workers = inference_workers(config.chunk.max_inflight, pipeline.max_concurrency)
        advice = startup_advice(warm_ms, config.chunk.steps_limit(info.trained_steps), pipeline.dt_ns, workers,
                                pipeline.backend.name, str(pipeline.device), info.trained_steps)
        if advice is not None:  # does this latency fit a chunk? say so plainly
            (log.warning if advice.too_slow else log.info)(advice.message)
        if config.chunk.max_inflight > workers:
            log.warning(f"chunk.max_inflight {config.chunk.max_inflight}: backend {pipeline.backend.name} "
                        f"on {pipeline.device} overlaps at most {pipeline.max_concurrency} inference(s) usefully; "
                        f"running {workers} inference worker(s), so at most {workers} request(s) in flight")
        return LoadedPolicy(config, info, pipeline, text_encoder, warm_ms, workers)
    except BaseException:
        if text_encoder is not None:
            text_encoder.close(0.0)
        pipeline.close()
        raise


def _text_encoder(config: PolicyConfig, pipeline: Any) -> Any:
    if config.text.encoder is not cfgmod.TextEncoder.UMT5:
        return None
    from lightwam_ros.text.online import OnlineEncoderConfig, OnlineTextEncoder

    return OnlineTextEncoder(pipeline.contexts, OnlineEncoderConfig(
        wan_dir=config.text.wan_dir, device=config.text.device, cache_dir=config.text.cache_dir))


def inference_pool(loaded: LoadedPolicy) -> Any:
    """The node's worker threads running the loaded model."""
    from lightwam_ros.inference.pool import InferencePool

    return InferencePool(loaded.predict, loaded.workers)


def build_controller(loaded: LoadedPolicy, config: PolicyConfig, pool: Pool, clocks: Clocks, log: Log, *,
                     name: str, topics: Topics) -> PolicyController:
    """A controller for ``config`` (the loaded one, or one derived from it) on ``pool``; the first
    requests are paced from the warm-up latency."""
    warm = loaded.warm_ms
    warm_ns = int(warm * 1e6) if warm == warm and warm > 0 else None  # not NaN
    from lightwam_ros.text.lookup import BundleInstructions  # the text stack (torch): with a loaded model only

    instructions = BundleInstructions.of_pipeline(loaded.pipeline, loaded.text_encoder)
    return PolicyController(config, loaded.info, pool, instructions, clocks, log, name=name,
                            model=loaded.model_info(), topics=topics, warm_latency_ns=warm_ns)
