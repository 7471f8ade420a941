#include "client/cli/gptq_flags.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace nvfp4::cli {

void AddGptqFlags(CLI::App* app, GptqFlags* f) {
  auto has = [&](const std::string& name) { return app->get_option_no_throw(name) != nullptr; };
  if (!has("--block-scales")) {
    app->add_option("--block-scales", f->block_scales,
                    "gptq: candidates of each 16-column block's E4M3 scale, chosen when the "
                    "block's first column is reached from its error-updated values (--objective "
                    "picks among them).")
        ->check(CLI::IsMember({"rtn", "4over6", "scalesweep", "soar"}))
        ->capture_default_str();
  }
  if (!has("--dampening")) {
    app->add_option("--dampening", f->dampening,
                    "gptq: added to the Gram diagonal, as a fraction of its mean (raised tenfold, "
                    "and reported, while the Gram is not positive definite).")
        ->check(CLI::Range(0.0, 10.0))
        ->capture_default_str();
  }
  if (!has("--gptq-block-size")) {
    app->add_option("--gptq-block-size", f->block_size,
                    "gptq: columns per lazy batch update (a multiple of 16).")
        ->check(CLI::Range(16, 4096))
        ->capture_default_str();
  }
  if (!has("--order")) {
    app->add_option("--order", f->order,
                    "gptq: column order; static = descending Gram diagonal (act-order), each "
                    "column keeping its scale group, whose scale is fixed before the sweep.")
        ->check(CLI::IsMember({"natural", "static"}))
        ->capture_default_str();
  }
  if (!has("--gptq-global-scale")) {
    app->add_option("--gptq-global-scale", f->global_scale,
                    "gptq: the per-tensor scale: amax (A/2688 for rtn block scales, A/1536 "
                    "otherwise) or cjso (SOAR's refit without feedback: no more accurate on real "
                    "weights, and slow under --objective hessian).")
        ->check(CLI::IsMember({"amax", "cjso"}))
        ->capture_default_str();
  }
}

absl::StatusOr<GptqOptions> GptqOptionsFromFlags(const GptqFlags& f) {
  GptqOptions o;
  ASSIGN_OR_RETURN(o.block_scales, ParseMethod(f.block_scales));
  o.dampening = f.dampening;
  o.block_size = f.block_size;
  ASSIGN_OR_RETURN(o.order, ParseGptqOrder(f.order));
  ASSIGN_OR_RETURN(o.global_scale, ParseGptqGlobalScale(f.global_scale));
  if (absl::Status s = ValidateGptqOptions(o); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--block-scales/--dampening/--gptq-block-size: ",
                                                   s.message()));
  }
  return o;
}

absl::StatusOr<GptqOptions> GptqOptionsFromApp(CLI::App* app) {
  GptqFlags f;
  auto read = [&](const std::string& name, auto* value) {
    CLI::Option* o = app->get_option_no_throw(name);
    if (o != nullptr && o->count() > 0) *value = o->as<std::decay_t<decltype(*value)>>();
  };
  read("--block-scales", &f.block_scales);
  read("--dampening", &f.dampening);
  read("--gptq-block-size", &f.block_size);
  read("--order", &f.order);
  read("--gptq-global-scale", &f.global_scale);
  return GptqOptionsFromFlags(f);
}

}  // namespace nvfp4::cli
