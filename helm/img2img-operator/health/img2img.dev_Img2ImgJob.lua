-- Argo CD health check for img2img.dev/Img2ImgJob.
-- argocd-cm key: resource.customizations.health.img2img.dev_Img2ImgJob (docs/gitops.md).
-- Lua 5.1 (Argo CD runs gopher-lua); standard libraries are not needed.
--
--   no status yet, IN_QUEUE, IN_PROGRESS       -> Progressing
--   status.observedGeneration ~= generation    -> Progressing (the operator has not seen the latest spec)
--   COMPLETED                                  -> Healthy
--   FAILED, TIMED_OUT                          -> Degraded, with status.error
--   CANCELLED                                  -> Suspended: stopped on request (spec.cancel), not a fault
--   anything else                              -> Unknown
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function reason(status, fallback)
  if status.error ~= nil and status.error ~= "" then
    return status.error
  end
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.message ~= nil and ready.message ~= "" then
    return ready.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to accept the job"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "The operator has not yet observed generation " .. tostring(generation) ..
    " (status is for generation " .. tostring(status.observedGeneration) .. ")"
  return hs
end

local state = status.status
if state == "IN_QUEUE" then
  hs.status = "Progressing"
  if status.queuePosition ~= nil then
    hs.message = "In queue, position " .. tostring(status.queuePosition)
  else
    hs.message = "In queue"
  end
elseif state == "IN_PROGRESS" then
  hs.status = "Progressing"
  hs.message = "Running"
  if status.runnerPod ~= nil then
    hs.message = hs.message .. " on pod " .. status.runnerPod
  end
  if status.attempts ~= nil and status.attempts > 1 then
    hs.message = hs.message .. " (attempt " .. tostring(status.attempts) .. ")"
  end
elseif state == "COMPLETED" then
  hs.status = "Healthy"
  local images = 0
  if status.output ~= nil and status.output.images ~= nil then
    images = #status.output.images
  end
  hs.message = "Completed: " .. tostring(images) .. " image(s)"
  if status.executionTime ~= nil then
    hs.message = hs.message .. " in " .. tostring(status.executionTime) .. " ms"
  end
elseif state == "FAILED" then
  hs.status = "Degraded"
  hs.message = reason(status, "Failed")
elseif state == "TIMED_OUT" then
  hs.status = "Degraded"
  hs.message = reason(status, "Timed out")
elseif state == "CANCELLED" then
  hs.status = "Suspended"
  hs.message = reason(status, "Cancelled")
else
  hs.status = "Unknown"
  hs.message = "Unknown job status " .. tostring(state)
end
return hs
