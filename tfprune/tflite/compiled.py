"""Running a TFLite model in LiteRT's CompiledModel API, the API LiteRT documents for Android (and the one its
``litert-benchmark`` command uses): predictions and single-image latency on the CPU accelerator.

The CPU accelerator delegates what XNNPACK takes and runs the rest with the builtin kernels, as the Interpreter's
default does. CompiledModel's tensor details carry no quantization, so an int8 model's input scale and zero point
are read from the file through the Interpreter (``runtime``'s quantize/dequantize are shared).
"""

import numpy as np
from ai_edge_litert.compiled_model import CompiledModel
from ai_edge_litert.hardware_accelerator import HardwareAccelerator
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.options import CpuOptions, Options

from tfprune.tflite import runtime

API = "compiled_model"


class Compiled:
    """One CompiledModel on the CPU accelerator with its single-image input and output buffers.

    Args:
      model_bytes: ``.tflite`` contents of a single-input single-output model.
      num_threads: CPU threads (>= 1).

    Raises:
      ValueError: num_threads < 1; a model that is not single-input single-output.
      RuntimeError: LiteRT cannot compile or allocate the model (its message).
    """

    def __init__(self, model_bytes, num_threads=1):
        if num_threads < 1:
            raise ValueError(f"num_threads {num_threads} must be at least 1")
        options = Options(hardware_accelerators=HardwareAccelerator.CPU,
                          cpu_options=CpuOptions(num_threads=num_threads))
        try:
            self.model = CompiledModel.from_buffer(model_bytes, options=options)
        except Exception as e:  # the wrapper raises plain RuntimeError/ValueError with LiteRT's status text
            raise RuntimeError(f"LiteRT CompiledModel cannot load the model: {str(e).strip()}") from None
        self.signature = next(iter(self.model.get_signature_list()))
        inputs = self.model.get_input_tensor_details(self.signature)
        outputs = self.model.get_output_tensor_details(self.signature)
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"the TFLite model has {len(inputs)} inputs and {len(outputs)} outputs; tfprune runs "
                             "single-input single-output classifiers")
        (self.input_name, self.input_info), = inputs.items()
        (self.output_name, self.output_info), = outputs.items()
        interpreter = Interpreter(model_content=model_bytes)  # the quantization CompiledModel does not report
        self.input_details = interpreter.get_input_details()[0]
        self.output_details = interpreter.get_output_details()[0]
        self.input_buffer = self.model.create_input_buffer_by_name(self.signature, self.input_name)
        self.output_buffer = self.model.create_output_buffer_by_name(self.signature, self.output_name)
        self.output_size = int(np.prod(self.output_info["shape"]))

    @property
    def fully_accelerated(self):
        """True when the CPU accelerator (XNNPACK) took every operator."""
        return bool(self.model.is_fully_accelerated())

    def run(self, image):
        """Raw output (1-D, the output's dtype) for one quantized or float ``image`` of the input's shape."""
        self.input_buffer.write(np.ascontiguousarray(image))
        try:
            self.model.run_by_name(self.signature, {self.input_name: self.input_buffer},
                                   {self.output_name: self.output_buffer})
        except Exception as e:
            raise RuntimeError(f"LiteRT CompiledModel cannot run the model: {str(e).strip()}") from None
        return self.output_buffer.read(self.output_size, self.output_details["dtype"])

    def predict(self, x):
        """Class probabilities (N, classes) float32 for inputs ``x`` (N, *input shape), one image per run."""
        x = runtime.model_inputs(x, self.input_details)
        probs = np.empty((len(x), int(self.output_info["shape"][-1])), np.float32)
        for i in range(len(x)):
            raw = self.run(runtime.quantize(x[i:i + 1], self.input_details))
            probs[i] = runtime.dequantize(raw, self.output_details)
        return probs


def evaluate_compiled(model_bytes, x, y, num_threads=1, from_logits=False):
    """Accuracy, loss and outputs of a TFLite classifier in CompiledModel (CPU accelerator); ``from_logits``: the
    file outputs logits (the loss is taken on their softmax).

    Returns:
      dict with ``accuracy`` (0..1), ``loss``, ``images``, ``fully_accelerated``, ``probs`` (N, classes: the file's
      outputs).

    Raises:
      ValueError: empty or mismatched ``x``/``y``, wrong image shape, labels past the classes.
      RuntimeError: LiteRT cannot load or run the model.
    """
    y = runtime.check_labeled(x, y)
    compiled = Compiled(model_bytes, num_threads)
    probs = compiled.predict(x)
    return {**runtime.classification_figures(probs, y, from_logits), "fully_accelerated": compiled.fully_accelerated,
            "probs": probs}


def benchmark_compiled(model_bytes, num_threads=1, runs=100, warmup=10, seed=0):
    """Single-image latency of CompiledModel's run (input written once, outside the timing), after ``warmup`` runs.

    Returns:
      dict with ``median_ms``, ``p90_ms``, ``mean_ms``, ``min_ms``, ``runs``, ``warmup``, ``num_threads``,
      ``fully_accelerated``.

    Raises:
      ValueError: runs < 1, warmup < 0 or num_threads < 1.
      RuntimeError: LiteRT cannot load or run the model.
    """
    runtime.check_runs(runs, warmup)
    compiled = Compiled(model_bytes, num_threads)
    image = np.random.default_rng(seed).random(compiled.input_details["shape"], dtype=np.float32)
    compiled.input_buffer.write(np.ascontiguousarray(runtime.quantize(image, compiled.input_details)))
    inputs, outputs = {compiled.input_name: compiled.input_buffer}, {compiled.output_name: compiled.output_buffer}
    figures = runtime.time_runs(lambda: compiled.model.run_by_name(compiled.signature, inputs, outputs), runs, warmup)
    return {**figures, "num_threads": num_threads, "fully_accelerated": compiled.fully_accelerated}


__all__ = ["API", "Compiled", "benchmark_compiled", "evaluate_compiled"]
