// The Node-API surface of the CUDA backend (typed in ../native.ts): a CudaModel class over DeviceModel,
// whose step and adapter writes run on libuv's thread pool and answer with promises, so the JavaScript
// thread that owns the engine is never blocked by the GPU.
#include <napi.h>

#include <cstring>
#include <memory>

#include "device-model.h"

namespace luminet {

namespace {

int intProperty(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsNumber()) throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a number");
  return value.As<Napi::Number>().Int32Value();
}

bool boolProperty(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsBoolean()) throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

std::vector<int> intVector(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    throw Napi::TypeError::New(object.Env(), std::string(key) + " must be an Int32Array");
  const Napi::Int32Array array = value.As<Napi::Int32Array>();
  return std::vector<int>(array.Data(), array.Data() + array.ElementLength());
}

std::vector<double> doubleVector(const Napi::Object& object, const char* key) {
  const Napi::Value value = object.Get(key);
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
    throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a Float64Array");
  const Napi::Float64Array array = value.As<Napi::Float64Array>();
  return std::vector<double>(array.Data(), array.Data() + array.ElementLength());
}

/** A Float32Array property, or null where `optional` allows it. */
const float* floatArray(const Napi::Object& object, const char* key, size_t& count, bool optional) {
  const Napi::Value value = object.Get(key);
  if (optional && (value.IsNull() || value.IsUndefined())) {
    count = 0;
    return nullptr;
  }
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw Napi::TypeError::New(object.Env(), std::string(key) + " must be a Float32Array");
  const Napi::Float32Array array = value.As<Napi::Float32Array>();
  count = array.ElementLength();
  return array.Data();
}

Napi::Float32Array floats(Napi::Env env, const std::vector<float>& values) {
  Napi::Float32Array array = Napi::Float32Array::New(env, values.size());
  std::memcpy(array.Data(), values.data(), values.size() * sizeof(float));
  return array;
}

/** Runs `work` on the JavaScript thread, a C++ exception becoming a JavaScript error with its message. */
template <typename Work>
auto rethrowInJavaScript(const Napi::Env& env, Work&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& error) {
    throw Napi::Error::New(env, error.what());
  }
}

ModelSpec parseSpec(const Napi::Object& o) {
  ModelSpec spec;
  spec.layers = intProperty(o, "layers");
  spec.hidden = intProperty(o, "hidden");
  spec.intermediate = intProperty(o, "intermediate");
  spec.heads = intProperty(o, "heads");
  spec.kvHeads = intProperty(o, "kvHeads");
  spec.headDim = intProperty(o, "headDim");
  spec.vocab = intProperty(o, "vocab");
  const Napi::Value eps = o.Get("rmsNormEps");
  if (!eps.IsNumber()) throw Napi::TypeError::New(o.Env(), "rmsNormEps must be a number");
  spec.rmsNormEps = eps.As<Napi::Number>().FloatValue();
  spec.qkvBias = boolProperty(o, "qkvBias");
  spec.qkNorm = boolProperty(o, "qkNorm");
  spec.tieWordEmbeddings = boolProperty(o, "tieWordEmbeddings");
  size_t count = 0;
  const float* invFreq = floatArray(o, "invFreq", count, false);
  spec.invFreq.assign(invFreq, invFreq + count);
  const Napi::Value ropeScale = o.Get("ropeScale");
  if (!ropeScale.IsNumber()) throw Napi::TypeError::New(o.Env(), "ropeScale must be a number");
  spec.ropeScale = ropeScale.As<Napi::Number>().FloatValue();
  spec.maxContext = intProperty(o, "maxContext");
  spec.cacheRows = intProperty(o, "cacheRows");
  spec.maxStepTokens = intProperty(o, "maxStepTokens");
  spec.slots = intProperty(o, "slots");
  spec.maxRank = intProperty(o, "maxRank");
  spec.cudaGraphs = boolProperty(o, "cudaGraphs");
  spec.device = intProperty(o, "device");
  return spec;
}

SourceDtype parseDtype(const Napi::Env& env, const std::string& name) {
  if (name == "F32") return SourceDtype::F32;
  if (name == "F16") return SourceDtype::F16;
  if (name == "BF16") return SourceDtype::BF16;
  throw Napi::TypeError::New(env, "dtype must be F32, F16 or BF16, not " + name);
}

/** Runs `work` on the thread pool and settles a promise: resolved by `answer`, rejected with work's error. */
class PromiseWorker : public Napi::AsyncWorker {
 public:
  explicit PromiseWorker(Napi::Env env) : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  virtual void run() = 0;
  virtual Napi::Value answer(Napi::Env env) { return env.Undefined(); }

 private:
  void Execute() override {
    try {
      run();
    } catch (const std::exception& error) {
      SetError(error.what());
    }
  }
  void OnOK() override { deferred_.Resolve(answer(Env())); }
  void OnError(const Napi::Error& error) override { deferred_.Reject(error.Value()); }

  Napi::Promise::Deferred deferred_;
};

class StepWorker : public PromiseWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<DeviceModel> model, StepInput input)
      : PromiseWorker(env), model_(std::move(model)), input_(std::move(input)) {}

 private:
  void run() override { output_ = model_->step(input_); }
  Napi::Value answer(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    Napi::Int32Array argmax = Napi::Int32Array::New(env, output_.argmax.size());
    std::memcpy(argmax.Data(), output_.argmax.data(), output_.argmax.size() * sizeof(int));
    result.Set("argmax", argmax);
    result.Set("logits", input_.returnLogits ? floats(env, output_.logits) : env.Null());
    if (input_.candidates > 0) {
      Napi::Object candidates = Napi::Object::New(env);
      Napi::Int32Array tokens = Napi::Int32Array::New(env, output_.candidateIds.size());
      std::memcpy(tokens.Data(), output_.candidateIds.data(), output_.candidateIds.size() * sizeof(int));
      candidates.Set("tokens", tokens);
      candidates.Set("logits", floats(env, output_.candidateLogits));
      candidates.Set("logSumExp", floats(env, output_.logSumExp));
      result.Set("candidates", candidates);
    } else {
      result.Set("candidates", env.Null());
    }
    if (input_.profile) {
      Napi::Object phases = Napi::Object::New(env);
      for (const auto& [phase, ms] : output_.phases) phases.Set(phase, ms);
      result.Set("phases", phases);
    } else {
      result.Set("phases", env.Null());
    }
    return result;
  }

  std::shared_ptr<DeviceModel> model_;
  StepInput input_;
  StepOutput output_;
};

std::vector<AdapterModuleData> parseModules(const Napi::Array& modules) {
  std::vector<AdapterModuleData> parsed;
  for (uint32_t i = 0; i < modules.Length(); ++i) {
    const Napi::Value entry = modules.Get(i);
    if (!entry.IsObject()) throw Napi::TypeError::New(modules.Env(), "adapter modules must be objects");
    const Napi::Object m = entry.As<Napi::Object>();
    AdapterModuleData data;
    data.layer = intProperty(m, "layer");
    data.kind = intProperty(m, "kind");
    data.rank = intProperty(m, "rank");
    data.a = floatArray(m, "a", data.aCount, false);
    data.scaledBT = floatArray(m, "scaledBT", data.scaledBTCount, false);
    data.scaledBias = floatArray(m, "scaledBias", data.scaledBiasCount, true);
    parsed.push_back(data);
  }
  return parsed;
}

class AdapterWorker : public PromiseWorker {
 public:
  AdapterWorker(Napi::Env env, std::shared_ptr<DeviceModel> model, int slot, const Napi::Array& modules,
                std::vector<AdapterModuleData> parsed)
      : PromiseWorker(env),
        model_(std::move(model)),
        slot_(slot),
        keepAlive_(Napi::Persistent(static_cast<Napi::Object>(modules))),
        modules_(std::move(parsed)) {}

 private:
  void run() override { model_->writeAdapter(slot_, modules_); }

  std::shared_ptr<DeviceModel> model_;
  int slot_;
  // The typed arrays stay reachable (so their memory stays put) until the write is done.
  Napi::ObjectReference keepAlive_;
  std::vector<AdapterModuleData> modules_;
};

class RooflineWorker : public PromiseWorker {
 public:
  RooflineWorker(Napi::Env env, std::shared_ptr<DeviceModel> model, int size, size_t copyBytes, int repeats)
      : PromiseWorker(env), model_(std::move(model)), size_(size), copyBytes_(copyBytes), repeats_(repeats) {}

 private:
  void run() override { report_ = model_->measureRoofline(size_, copyBytes_, repeats_); }
  Napi::Value answer(Napi::Env env) override {
    Napi::Object result = Napi::Object::New(env);
    result.Set("flopsPerSecond", report_.flopsPerSecond);
    result.Set("bytesPerSecond", report_.bytesPerSecond);
    return result;
  }

  std::shared_ptr<DeviceModel> model_;
  int size_;
  size_t copyBytes_;
  int repeats_;
  RooflineReport report_{};
};

class CudaModel : public Napi::ObjectWrap<CudaModel> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "CudaModel",
                       {InstanceMethod<&CudaModel::setWeight>("setWeight"),
                        InstanceMethod<&CudaModel::writeAdapter>("writeAdapter"),
                        InstanceMethod<&CudaModel::clearSlot>("clearSlot"),
                        InstanceMethod<&CudaModel::copyCacheRow>("copyCacheRow"),
                        InstanceMethod<&CudaModel::step>("step"),
                        InstanceMethod<&CudaModel::memory>("memory"),
                        InstanceMethod<&CudaModel::roofline>("roofline"),
                        InstanceMethod<&CudaModel::logitsOf>("logitsOf"),
                        InstanceMethod<&CudaModel::deviceName>("deviceName"),
                        InstanceMethod<&CudaModel::close>("close")});
  }

  explicit CudaModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CudaModel>(info) {
    if (!info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "CudaModel takes a spec object");
    const ModelSpec spec = parseSpec(info[0].As<Napi::Object>());
    model_ = rethrowInJavaScript(info.Env(), [&] { return std::make_shared<DeviceModel>(spec); });
  }

 private:
  std::shared_ptr<DeviceModel> open(const Napi::Env& env) {
    if (!model_) throw Napi::Error::New(env, "this CUDA model is closed");
    return model_;
  }

  Napi::Value setWeight(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsString()) throw Napi::TypeError::New(env, "setWeight(name, data, dtype, offset): name must be a string");
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
      throw Napi::TypeError::New(env, "setWeight: data must be a Uint8Array");
    if (!info[2].IsString()) throw Napi::TypeError::New(env, "setWeight: dtype must be a string");
    if (!info[3].IsNumber()) throw Napi::TypeError::New(env, "setWeight: offset must be a number");
    const Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
    const int64_t offset = info[3].As<Napi::Number>().Int64Value();
    if (offset < 0) throw Napi::RangeError::New(env, "setWeight: offset must be ≥ 0");
    rethrowInJavaScript(env, [&] {
      open(env)->setWeight(info[0].As<Napi::String>().Utf8Value(), data.Data(), data.ByteLength(),
                           parseDtype(env, info[2].As<Napi::String>().Utf8Value()), size_t(offset));
    });
    return env.Undefined();
  }

  Napi::Value writeAdapter(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsNumber() || !info[1].IsArray())
      throw Napi::TypeError::New(env, "writeAdapter(slot, modules): a slot number and an array of modules");
    const Napi::Array modules = info[1].As<Napi::Array>();
    std::vector<AdapterModuleData> parsed = parseModules(modules);
    auto* worker =
        new AdapterWorker(env, open(env), info[0].As<Napi::Number>().Int32Value(), modules, std::move(parsed));
    const Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  Napi::Value clearSlot(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "clearSlot(slot): slot must be a number");
    rethrowInJavaScript(env, [&] { open(env)->clearSlot(info[0].As<Napi::Number>().Int32Value()); });
    return env.Undefined();
  }

  Napi::Value copyCacheRow(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsNumber() || !info[1].IsNumber())
      throw Napi::TypeError::New(env, "copyCacheRow(from, to): rows must be numbers");
    rethrowInJavaScript(env, [&] {
      open(env)->copyCacheRow(info[0].As<Napi::Number>().Int32Value(), info[1].As<Napi::Number>().Int32Value());
    });
    return env.Undefined();
  }

  Napi::Value step(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "step(step): a step object");
    const Napi::Object o = info[0].As<Napi::Object>();
    StepInput input;
    input.tokens = intVector(o, "tokens");
    input.cacheRows = intVector(o, "cacheRows");
    input.positions = intVector(o, "positions");
    input.slots = intVector(o, "slots");
    input.logitRows = intVector(o, "logitRows");
    input.returnLogits = boolProperty(o, "returnLogits");
    input.profile = !o.Get("profile").IsUndefined() && boolProperty(o, "profile");
    const Napi::Value penalties = o.Get("penalties");
    if (!penalties.IsUndefined()) {
      if (!penalties.IsObject()) throw Napi::TypeError::New(env, "penalties must be an object");
      const Napi::Object p = penalties.As<Napi::Object>();
      input.penaltyRows = intVector(p, "rows");
      input.penaltyTokens = intVector(p, "tokens");
      input.penaltyRepetition = doubleVector(p, "repetition");
      input.penaltyPresence = doubleVector(p, "presence");
      input.penaltyFrequency = doubleVector(p, "frequency");
    }
    const Napi::Value candidates = o.Get("candidates");
    if (!candidates.IsUndefined()) {
      input.candidates = intProperty(o, "candidates");
      if (input.candidates > 0) {
        size_t count = 0;
        const float* temperatures = floatArray(o, "temperatures", count, false);
        input.temperatures.assign(temperatures, temperatures + count);
      }
    }
    auto* worker = new StepWorker(env, open(env), std::move(input));
    const Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  Napi::Value memory(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    const MemoryReport report = open(env)->memory();
    Napi::Object result = Napi::Object::New(env);
    result.Set("weightsBytes", double(report.weightsBytes));
    result.Set("kvCacheBytes", double(report.kvCacheBytes));
    result.Set("adapterBankBytes", double(report.adapterBankBytes));
    result.Set("scratchBytes", double(report.scratchBytes));
    result.Set("freeBytes", double(report.freeBytes));
    result.Set("totalBytes", double(report.totalBytes));
    return result;
  }

  Napi::Value roofline(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "roofline({ gemmSize, copyBytes, repeats })");
    const Napi::Object o = info[0].As<Napi::Object>();
    const Napi::Value bytes = o.Get("copyBytes");
    if (!bytes.IsNumber()) throw Napi::TypeError::New(env, "copyBytes must be a number");
    auto* worker = new RooflineWorker(env, open(env), intProperty(o, "gemmSize"),
                                      size_t(bytes.As<Napi::Number>().Int64Value()), intProperty(o, "repeats"));
    const Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  Napi::Value logitsOf(const Napi::CallbackInfo& info) {
    const Napi::Env env = info.Env();
    if (!info[0].IsNumber()) throw Napi::TypeError::New(env, "logitsOf(row): row must be a number");
    return rethrowInJavaScript(
        env, [&] { return floats(env, open(env)->logitsOf(info[0].As<Napi::Number>().Int32Value())); });
  }

  Napi::Value deviceName(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), open(info.Env())->deviceName());
  }

  /** Drops this handle's share of the model; steps and writes still running keep theirs until they finish. */
  Napi::Value close(const Napi::CallbackInfo& info) {
    model_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<DeviceModel> model_;
};

Napi::Value deviceCount(const Napi::CallbackInfo& info) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) count = 0;
  return Napi::Number::New(info.Env(), count);
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("CudaModel", CudaModel::define(env));
  exports.Set("deviceCount", Napi::Function::New(env, deviceCount, "deviceCount"));
  return exports;
}

}  // namespace

}  // namespace luminet

static Napi::Object initLuminetCuda(Napi::Env env, Napi::Object exports) { return luminet::init(env, exports); }

NODE_API_MODULE(luminet_cuda, initLuminetCuda)
